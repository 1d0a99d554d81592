//! One direction of a TCP stream: sequence tracking, out-of-order buffering within a bounded window,
//! retransmission/overlap handling (first copy wins, conflicts counted) and gap skipping.
//!
//! Consumes the sequence number, payload and FIN of each segment one side sent; produces in-order
//! `on_data` / `on_gap` calls on the flow's [`StreamHandler`]. Sequence numbers are mapped to 64-bit
//! stream offsets relative to the next expected byte (32-bit wrapping arithmetic), so wraparound
//! near 2^32 and streams longer than 4 GiB need no special cases.

use std::collections::BTreeMap;

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

/// Reassembly state of one direction.
#[derive(Debug, Default)]
pub struct Reassembler {
    /// `None` until the direction's SYN or first payload segment fixes the stream start.
    next: Option<Cursor>,
    /// Out-of-order data by stream offset (copies: the segments' frames are not kept); entries
    /// never overlap and all start after `next`.
    pending: BTreeMap<u64, Box<[u8]>>,
    pending_bytes: usize,
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
        self.pending_bytes
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
            self.pending = BTreeMap::new();
            self.pending_bytes = 0;
        }
    }

    /// A segment of a bypassed direction without SYN, FIN or RST: what [`Reassembler::segment`]
    /// would do with it (fix the stream start if none was known), without the rest.
    #[inline]
    pub fn touch(&mut self, seq: u32) {
        debug_assert!(self.bypass);
        self.next.get_or_insert(Cursor { seq, offset: 0 });
    }

    /// The direction no longer reassembles.
    pub fn is_bypassed(&self) -> bool {
        self.bypass
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
        while !self.bypass
            && self
                .pending
                .first_key_value()
                .is_some_and(|(&first, _)| first < acked)
        {
            self.skip_hole(sink);
        }
        self.report_fin_if_reached(sink);
    }

    /// The flow is closing: skip every hole, deliver everything held, then report a FIN that was
    /// seen but not yet reached (the bytes before it that never arrived count as a gap).
    pub(crate) fn flush<H: StreamHandler>(&mut self, sink: &mut Sink<'_, H>) {
        while !self.pending.is_empty() && !self.bypass {
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
                let stop = self
                    .pending
                    .first_key_value()
                    .map_or(end_u, |(&k, _)| k.min(end_u));
                let now = (stop - begin) as usize;
                if let Some(head) = fresh.get(..now) {
                    sink.data(head);
                    self.advance(now as u64);
                }
                if !sink.handler.wants_data() {
                    self.bypass();
                    return;
                }
                if stop < end_u {
                    let rest = &fresh[now.min(fresh.len())..];
                    self.merge(stop, rest, sink.stats());
                }
                self.drain(sink);
                return;
            }

            // Out of order: make room by skipping holes (they will not fill in time), then hold it.
            if self.pending_bytes + fresh.len() > window && !self.pending.is_empty() {
                self.skip_hole(sink);
                if self.bypass {
                    return;
                }
                continue;
            }
            let fresh = if fresh.len() > window {
                sink.stats().window_dropped_bytes += (fresh.len() - window) as u64;
                &fresh[..window]
            } else {
                fresh
            };
            self.merge(begin, fresh, sink.stats());
            return;
        }
    }

    /// Adds `data` at `start` (> next) to the held data: only the bytes not already held are
    /// stored (first copy wins); held bytes that differ from the new copy count as conflicts.
    fn merge(&mut self, start: u64, data: &[u8], stats: &mut Stats) {
        let end = start + data.len() as u64;
        let mut at = start;
        // A held segment that starts before `start` and reaches into it.
        if let Some((&k, held)) = self.pending.range(..start).next_back() {
            let held_end = k + held.len() as u64;
            if held_end > at {
                let upto = held_end.min(end);
                stats.overlap_conflicts += differing(held, k, data, start, at, upto);
                at = upto;
            }
        }
        while at < end {
            let Some((&k, held)) = self.pending.range(at..end).next() else {
                self.hold(at, &data[(at - start) as usize..]);
                return;
            };
            let upto = (k + held.len() as u64).min(end);
            let conflicts = differing(held, k, data, start, k, upto);
            stats.overlap_conflicts += conflicts;
            if k > at {
                self.hold(at, &data[(at - start) as usize..(k - start) as usize]);
            }
            at = upto;
        }
    }

    /// Keeps a copy of `data` (the segment borrows a frame that is gone after this packet).
    fn hold(&mut self, at: u64, data: &[u8]) {
        if !data.is_empty() {
            self.pending_bytes += data.len();
            self.pending.insert(at, data.into());
        }
    }

    /// Delivers held data that starts at the next expected byte.
    fn drain<H: StreamHandler>(&mut self, sink: &mut Sink<'_, H>) {
        loop {
            let next = self.next_offset();
            let Some(entry) = self.pending.first_entry() else {
                return;
            };
            if *entry.key() != next {
                return;
            }
            let data = entry.remove();
            self.pending_bytes -= data.len();
            sink.data(&data);
            self.advance(data.len() as u64);
            if !sink.handler.wants_data() {
                self.bypass();
                return;
            }
        }
    }

    /// Skips the hole before the first held segment and delivers what follows it.
    fn skip_hole<H: StreamHandler>(&mut self, sink: &mut Sink<'_, H>) {
        let Some((&first, _)) = self.pending.first_key_value() else {
            return;
        };
        let hole = first.saturating_sub(self.next_offset());
        sink.gap(hole);
        self.advance(hole);
        self.drain(sink);
    }
}

/// Number of bytes in `[from, to)` (stream offsets) where `a` (at `a_start`) and `b` (at `b_start`)
/// differ.
fn differing(a: &[u8], a_start: u64, b: &[u8], b_start: u64, from: u64, to: u64) -> u64 {
    let (Some(x), Some(y)) = (
        a.get((from - a_start) as usize..(to - a_start) as usize),
        b.get((from - b_start) as usize..(to - b_start) as usize),
    ) else {
        return 0;
    };
    if x == y {
        0
    } else {
        x.iter().zip(y).filter(|(p, q)| p != q).count() as u64
    }
}
