//! Fetching record headers into the cache before the reader needs them.
//!
//! A capture file is a chain: a pcap record's header (a pcapng block's) says where the next one
//! starts, so the reader waits for one header's memory before it can ask for the next. A mapped file's bytes come
//! from memory, not from a copy just made, and records a kilobyte or so apart are too far for
//! the hardware prefetcher to follow. So besides the next record (known exactly), the headers two
//! and three records on are fetched where they would be if the coming records have the sizes
//! most recently seen: a bulk transfer alternates full segments and acknowledgements, two sizes.
//! A wrong guess costs two cache lines of bandwidth, nothing else.

use crate::base::prefetch;

/// The two most recent distinct record sizes.
#[derive(Debug, Default)]
pub(super) struct Lookahead {
    sizes: [usize; 2],
}

impl Lookahead {
    /// The record just read was `len` bytes long (header included) and the next starts at
    /// `buf[next..]`: fetch its header, and the guessed headers after it.
    #[inline(always)]
    pub fn hint(&mut self, buf: &[u8], next: usize, len: usize) {
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
}

#[cfg(test)]
mod tests {
    use super::Lookahead;

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
}
