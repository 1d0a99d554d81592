//! Fetching record headers into the cache before the reader needs them.
//!
//! A capture file is a chain: a pcap record's header (a pcapng block's) says where the next one
//! starts, so the reader waits for one header's memory before it can ask for the next. A mapped file's bytes come
//! from memory, not from a copy just made, and records a kilobyte or so apart are too far for
//! the hardware prefetcher to follow. So besides the next record (known exactly), the headers two
//! and three records on are fetched where they would be if the coming records have the sizes
//! most recently seen: a bulk transfer alternates full segments and acknowledgements, two sizes.
//! A wrong guess costs two cache lines of bandwidth, nothing else.
//!
//! Guesses miss where sizes vary (a fifth of the records of the bulk benchmark file). So every
//! cache line of the [`STREAM_AHEAD`] bytes after the next record is also asked for, into the
//! outer caches, as `dd` would stream them: a header the guesses missed then comes from there
//! rather than from memory. Measured on the benchmark files (medians of 9–11 interleaved runs):
//! the record walk alone 0.082 → 0.062 s; a two-thread run of the bulk file (its reader walks
//! every record) 0.102 → 0.098 s; one thread on the handshake file 0.569 → 0.549 s; one thread on
//! the bulk file and two on the handshake file within the noise.

use crate::base::{prefetch, prefetch_far};

/// How far past the next record every cache line is asked for.
pub(super) const STREAM_AHEAD: usize = 64 * 1024;

/// The two most recent distinct record sizes, and how far lines are streamed.
#[derive(Debug, Default)]
pub(super) struct Lookahead {
    sizes: [usize; 2],
    /// The offset up to which lines were asked for (a multiple of 64).
    streamed: usize,
}

impl Lookahead {
    /// The record just read was `len` bytes long (header included) and the next starts at
    /// `buf[next..]`: fetch its header, and the guessed headers after it; stream the lines up to
    /// [`STREAM_AHEAD`] past it.
    #[inline(always)]
    pub fn hint(&mut self, buf: &[u8], next: usize, len: usize) {
        self.stream(buf, next);
        if len != self.sizes[0] {
            self.sizes = [len, self.sizes[0]];
        }
        let [a, b] = self.sizes;
        prefetch(buf, next);
        prefetch(buf, next + a);
        prefetch(buf, next + 2 * a);
        if b != 0 {
            prefetch(buf, next + b);
            prefetch(buf, next + a + b);
            prefetch(buf, next + 2 * b);
        }
    }

    /// Asks for the lines not asked for yet up to [`STREAM_AHEAD`] past `next`; from `next` on
    /// when the reader moved back (a read buffer refilled from its start) or jumped ahead.
    #[inline(always)]
    fn stream(&mut self, buf: &[u8], next: usize) {
        let to = next.saturating_add(STREAM_AHEAD);
        if self.streamed < next || self.streamed > to {
            self.streamed = next & !63;
        }
        while self.streamed < to {
            prefetch_far(buf, self.streamed);
            self.streamed = self.streamed.saturating_add(64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Lookahead, STREAM_AHEAD};

    #[test]
    fn keeps_the_two_most_recent_distinct_sizes() {
        let buf = [0u8; 64];
        let mut l = Lookahead::default();
        l.hint(&buf, 0, 1514);
        assert_eq!(l.sizes, [1514, 0]);
        // A repeated size changes nothing; a new one pushes the older out.
        l.hint(&buf, 1514, 1514);
        assert_eq!(l.sizes, [1514, 0]);
        l.hint(&buf, 3028, 82);
        assert_eq!(l.sizes, [82, 1514]);
        l.hint(&buf, 3110, 1514);
        assert_eq!(l.sizes, [1514, 82]);
        l.hint(&buf, 4624, 600);
        assert_eq!(l.sizes, [600, 1514]);
        // Offsets far past the buffer are hints, never reads.
        l.hint(&buf, usize::MAX / 4, 600);
    }

    #[test]
    fn lines_are_streamed_once_up_to_the_distance_ahead_and_again_after_a_move_back() {
        let buf = [0u8; 64];
        // The first line boundary at or past `x`.
        let up = |x: usize| x.div_ceil(64) * 64;
        let mut l = Lookahead::default();
        l.hint(&buf, 100, 100);
        assert_eq!(l.streamed, up(100 + STREAM_AHEAD));
        // Further on: only the new lines past the old mark.
        l.hint(&buf, 1_600, 1_500);
        assert_eq!(l.streamed, up(1_600 + STREAM_AHEAD));
        // A refilled read buffer starts over at its front.
        l.hint(&buf, 24, 24);
        assert_eq!(l.streamed, up(24 + STREAM_AHEAD));
        // A jump past the mark (a damaged stretch skipped) starts from the new place.
        l.hint(&buf, 10 * STREAM_AHEAD + 5, 90);
        assert_eq!(l.streamed, up(11 * STREAM_AHEAD + 5));
    }
}
