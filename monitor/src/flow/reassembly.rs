//! One direction of a TCP stream: sequence tracking, out-of-order buffering within a bounded window,
//! retransmission/overlap handling (first copy wins, conflicts counted) and gap skipping.
//!
//! Consumes the sequence number, payload and FIN of each segment one side sent; produces in-order
//! `on_data` / `on_gap` calls on the flow's [`StreamHandler`]. Sequence numbers are mapped to 64-bit
//! stream offsets relative to the next expected byte (32-bit wrapping arithmetic), so wraparound
//! near 2^32 and streams longer than 4 GiB need no special cases.

use std::collections::VecDeque;

use crate::base::Timestamp;
use crate::stats::Stats;

use super::{Side, StreamHandler};

/// Where the handler's calls go: the flow's handler (and its context), as seen from one side.
pub(crate) struct Sink<'a, H: StreamHandler> {
    pub handler: &'a mut H,
    pub ctx: &'a mut H::Ctx,
    pub side: Side,
    pub ts: Timestamp,
}

impl<H: StreamHandler> Sink<'_, H> {
    fn stats(&mut self) -> &mut Stats {
        self.ctx.as_mut()
    }

    fn data(&mut self, data: &[u8]) {
        if !data.is_empty() {
            self.handler.on_data(self.ctx, self.side, self.ts, data);
        }
    }

    fn gap(&mut self, bytes: u64) {
        if bytes > 0 {
            let stats = self.stats();
            stats.reassembly_gaps += 1;
            stats.gap_bytes += bytes;
            self.handler.on_gap(self.ctx, self.side, bytes);
        }
    }
}

/// The next expected byte: its sequence number and its offset in the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cursor {
    seq: u32,
    offset: u64,
}

impl Cursor {
    /// Stream offset of `seq` (may be negative: before the stream start).
    fn offset_of(self, seq: u32) -> i64 {
        // Two's-complement distance: ahead up to 2^31-1 bytes, behind up to 2^31.
        let delta = i64::from(seq.wrapping_sub(self.seq).cast_signed());
        i64::try_from(self.offset)
            .unwrap_or(i64::MAX)
            .saturating_add(delta)
    }

    fn advance(&mut self, bytes: u64) {
        self.offset += bytes;
        // Sequence numbers wrap modulo 2^32: truncation is the intent.
        self.seq = self.seq.wrapping_add(bytes as u32);
    }
}

/// Out-of-order bytes waiting for the hole before them: one buffer covering stream offsets
/// `[base, base + buf.len())` and the ranges of it that hold data (sorted, disjoint, never
/// adjacent). Memory follows the span held, never the number of segments: a thousand one-byte
/// segments cost a thousand bytes and at most one range each. Bytes are copied in: a segment
/// borrows its frame ([`crate::capture::Frame`]) only while its packet is processed.
#[derive(Debug, Default)]
struct Held {
    base: u64,
    buf: Vec<u8>,
    ranges: VecDeque<(u64, u64)>,
    bytes: usize,
}

impl Held {
    fn first(&self) -> Option<u64> {
        self.ranges.front().map(|r| r.0)
    }

    fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    fn heap_bytes(&self) -> usize {
        self.buf.capacity() + self.ranges.capacity() * std::mem::size_of::<(u64, u64)>()
    }

    /// From the first held byte to the last, were `[start, end)` held too.
    fn span_with(&self, start: u64, end: u64) -> u64 {
        match (self.ranges.front(), self.ranges.back()) {
            (Some(f), Some(l)) => end.max(l.1) - start.min(f.0),
            _ => end - start,
        }
    }

    /// Stores `data` at stream offset `start`: bytes already held win, and held bytes that
    /// differ from the new copy are returned as the conflict count.
    fn put(&mut self, start: u64, data: &[u8]) -> u64 {
        if self.ranges.is_empty() {
            self.base = start;
            self.buf.clear();
        } else if start < self.base {
            let shift = (self.base - start) as usize;
            self.buf.splice(0..0, std::iter::repeat_n(0, shift));
            self.base = start;
        }
        let end = start + data.len() as u64;
        let need = (end - self.base) as usize;
        if self.buf.len() < need {
            self.buf.resize(need, 0);
        }
        let mut conflicts = 0;
        let mut at = start;
        let mut i = self.ranges.partition_point(|r| r.1 <= start);
        while at < end {
            let (copy_to, held) = match self.ranges.get(i) {
                Some(&(rs, re)) if rs < end => (rs.max(at), Some((rs.max(at), re.min(end)))),
                _ => (end, None),
            };
            if copy_to > at {
                let (b, d) = ((at - self.base) as usize, (at - start) as usize);
                let n = (copy_to - at) as usize;
                if let (Some(dst), Some(src)) = (self.buf.get_mut(b..b + n), data.get(d..d + n)) {
                    dst.copy_from_slice(src);
                }
                self.bytes += n;
            }
            let Some((os, oe)) = held else { break };
            conflicts += differing(
                self.buf
                    .get((os - self.base) as usize..(oe - self.base) as usize),
                data.get((os - start) as usize..(oe - start) as usize),
            );
            at = oe;
            i += 1;
        }
        // The union of [start, end) with every range it overlaps or touches.
        let lo = self.ranges.partition_point(|r| r.1 < start);
        let hi = self.ranges.partition_point(|r| r.0 <= end);
        let (mut s, mut e) = (start, end);
        if let (Some(f), Some(l)) = (
            self.ranges.get(lo),
            hi.checked_sub(1).and_then(|h| self.ranges.get(h)),
        ) && lo < hi
        {
            s = s.min(f.0);
            e = e.max(l.1);
        }
        self.ranges.drain(lo..hi.max(lo));
        self.ranges.insert(lo, (s, e));
        conflicts
    }

    /// The held bytes of the first range when it starts at `next`; `done` must follow.
    fn front_at(&self, next: u64) -> Option<&[u8]> {
        let &(s, e) = self.ranges.front()?;
        if s != next {
            return None;
        }
        self.buf
            .get((s - self.base) as usize..(e - self.base) as usize)
    }

    /// The first range was delivered.
    fn pop_front(&mut self) -> u64 {
        let Some((s, e)) = self.ranges.pop_front() else {
            return 0;
        };
        let n = e - s;
        self.bytes -= n as usize;
        if self.ranges.is_empty() {
            self.buf.clear();
        } else if (e - self.base) as usize > self.buf.len() / 2 {
            // Drop the delivered prefix once it is most of the buffer (amortised: each byte moves
            // at most once more).
            self.buf.drain(..(e - self.base) as usize);
            self.base = e;
        }
        n
    }

    fn clear(&mut self) {
        *self = Held::default();
    }
}

/// Reassembly state of one direction.
#[derive(Debug, Default)]
pub struct Reassembler {
    /// `None` until the direction's SYN or first payload segment fixes the stream start.
    next: Option<Cursor>,
    /// Out-of-order data, spanning at most the window.
    held: Held,
    /// Stream offset of the FIN, once seen.
    fin_at: Option<u64>,
    /// The FIN was reported to the handler.
    fin_reported: bool,
    /// The handler wants no more data: payload is ignored, only FIN is tracked.
    bypass: bool,
}

impl Reassembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// A SYN with sequence number `isn`: data starts at `isn + 1`.
    pub fn syn(&mut self, isn: u32) {
        if self.next.is_none() {
            self.next = Some(Cursor {
                seq: isn.wrapping_add(1),
                offset: 0,
            });
        }
    }

    /// Bytes delivered (or skipped over gaps) so far.
    pub fn delivered(&self) -> u64 {
        self.next.map_or(0, |c| c.offset)
    }

    /// Bytes held out of order.
    pub fn buffered(&self) -> usize {
        self.held.bytes
    }

    /// Heap memory this direction holds.
    pub fn heap_bytes(&self) -> usize {
        self.held.heap_bytes()
    }

    /// A FIN from this side was seen (whether or not it was reported yet).
    pub fn fin_seen(&self) -> bool {
        self.fin_at.is_some()
    }

    /// A FIN was seen but not reported yet.
    pub fn fin_pending(&self) -> bool {
        self.fin_at.is_some() && !self.fin_reported
    }

    /// The FIN was reported with `on_close_from` (all data before it delivered or skipped).
    pub fn fin_reported(&self) -> bool {
        self.fin_reported
    }

    /// Stops reassembling (the handler wants no more payload) and frees the buffer. From here on a
    /// segment only moves the FIN tracking: this runs for every packet of a decided connection.
    #[inline]
    pub fn bypass(&mut self) {
        if !self.bypass {
            self.bypass = true;
            self.held.clear();
        }
    }

    /// A segment of a bypassed direction without SYN, FIN or RST: what [`Reassembler::segment`]
    /// would do with it (fix the stream start if none was known), without the rest.
    #[inline]
    pub fn touch(&mut self, seq: u32) {
        debug_assert!(self.bypass);
        self.next.get_or_insert(Cursor { seq, offset: 0 });
    }

    /// One segment from this side. `seq` is the sequence number of the first payload byte (the
    /// SYN's own number already skipped). `window` bounds the out-of-order buffer.
    pub(crate) fn segment<H: StreamHandler>(
        &mut self,
        seq: u32,
        payload: &[u8],
        fin: bool,
        window: usize,
        sink: &mut Sink<'_, H>,
    ) {
        let cursor = *self.next.get_or_insert(Cursor { seq, offset: 0 });
        if fin && self.fin_at.is_none() {
            let end = cursor.offset_of(seq).saturating_add(payload.len() as i64);
            // A FIN before the stream start is bogus; ignore it.
            self.fin_at = u64::try_from(end).ok();
        }
        if !self.bypass && !payload.is_empty() {
            self.insert(cursor.offset_of(seq), payload, window, sink);
        }
        if fin {
            // Nothing more will come from this side: holes before the FIN will not fill.
            self.flush(sink);
        }
        self.report_fin_if_reached(sink);
    }

    /// The peer acknowledged up to `ack`: if that lies beyond a hole and into data we hold, the
    /// receiver got the hole's bytes and the capture lost them, so skip the hole now.
    pub(crate) fn acked<H: StreamHandler>(&mut self, ack: u32, sink: &mut Sink<'_, H>) {
        let Some(cursor) = self.next else { return };
        let Ok(acked) = u64::try_from(cursor.offset_of(ack)) else {
            return;
        };
        while !self.bypass && self.held.first().is_some_and(|first| first < acked) {
            self.skip_hole(sink);
        }
        self.report_fin_if_reached(sink);
    }

    /// The flow is closing: skip every hole, deliver everything held, then report a FIN that was
    /// seen but not yet reached (the bytes before it that never arrived count as a gap).
    pub(crate) fn flush<H: StreamHandler>(&mut self, sink: &mut Sink<'_, H>) {
        while !self.held.is_empty() && !self.bypass {
            self.skip_hole(sink);
        }
        if let (Some(fin), Some(cursor)) = (self.fin_at, self.next)
            && !self.fin_reported
            && fin > cursor.offset
            && !self.bypass
        {
            sink.gap(fin - cursor.offset);
            self.advance(fin - cursor.offset);
        }
        self.report_fin_if_reached(sink);
    }

    fn report_fin_if_reached<H: StreamHandler>(&mut self, sink: &mut Sink<'_, H>) {
        if self.fin_reported {
            return;
        }
        if let (Some(fin), Some(cursor)) = (self.fin_at, self.next)
            && (self.bypass || cursor.offset >= fin)
        {
            self.fin_reported = true;
            sink.handler
                .on_close_from(sink.ctx, sink.side, sink.ts, false);
        }
    }

    fn advance(&mut self, bytes: u64) {
        if let Some(c) = self.next.as_mut() {
            c.advance(bytes);
        }
    }

    fn next_offset(&self) -> u64 {
        self.delivered()
    }

    /// Places `data` (starting at stream offset `start`) and delivers whatever became in order.
    /// Out-of-order data is held in one span of at most `window` bytes: what does not fit first
    /// skips the holes before held data (they will not fill in time), and what still does not
    /// fit is dropped and counted.
    fn insert<H: StreamHandler>(
        &mut self,
        start: i64,
        data: &[u8],
        window: usize,
        sink: &mut Sink<'_, H>,
    ) {
        let len = data.len() as i64;
        let end = start.saturating_add(len);
        loop {
            let next = self.next_offset();
            let Ok(end_u) = u64::try_from(end) else {
                return;
            };
            if end_u <= next {
                return; // all of it was delivered already (a retransmission)
            }
            // Clip what was already delivered; `begin` is where the new bytes start.
            let begin = u64::try_from(start).unwrap_or(0).max(next);
            let skip = (begin as i64 - start) as usize;
            let Some(fresh) = data.get(skip..) else {
                return;
            };

            if begin == next {
                // In order. Bytes already held from `first` on were received first and win.
                let stop = self.held.first().map_or(end_u, |k| k.min(end_u));
                let now = (stop - begin) as usize;
                if let Some(head) = fresh.get(..now) {
                    sink.data(head);
                    self.advance(now as u64);
                }
                if !sink.handler.wants_data() {
                    self.bypass();
                    return;
                }
                if stop < end_u
                    && let Some(rest) = fresh.get(now..)
                {
                    sink.stats().overlap_conflicts += self.held.put(stop, rest);
                }
                self.drain(sink);
                return;
            }

            // Out of order: held data spans at most the window; make room by skipping holes (they
            // will not fill in time), and of what still does not fit, drop the end.
            if !self.held.is_empty() && self.held.span_with(begin, end_u) > window as u64 {
                self.skip_hole(sink);
                if self.bypass {
                    return;
                }
                continue;
            }
            let keep = fresh.len().min(window);
            if keep < fresh.len() {
                sink.stats().window_dropped_bytes += (fresh.len() - keep) as u64;
            }
            if let Some(kept) = fresh.get(..keep) {
                sink.stats().overlap_conflicts += self.held.put(begin, kept);
            }
            return;
        }
    }

    /// Delivers held data that starts at the next expected byte.
    fn drain<H: StreamHandler>(&mut self, sink: &mut Sink<'_, H>) {
        loop {
            let next = self.next_offset();
            let Some(data) = self.held.front_at(next) else {
                return;
            };
            sink.data(data);
            let n = self.held.pop_front();
            self.advance(n);
            if !sink.handler.wants_data() {
                self.bypass();
                return;
            }
        }
    }

    /// Skips the hole before the first held range and delivers what follows it.
    fn skip_hole<H: StreamHandler>(&mut self, sink: &mut Sink<'_, H>) {
        let Some(first) = self.held.first() else {
            return;
        };
        let hole = first.saturating_sub(self.next_offset());
        sink.gap(hole);
        self.advance(hole);
        self.drain(sink);
    }
}

/// Number of positions where the two copies of the same bytes differ.
fn differing(a: Option<&[u8]>, b: Option<&[u8]>) -> u64 {
    let (Some(x), Some(y)) = (a, b) else {
        return 0;
    };
    if x == y {
        0
    } else {
        x.iter().zip(y).filter(|(p, q)| p != q).count() as u64
    }
}
