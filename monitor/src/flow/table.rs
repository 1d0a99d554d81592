//! The flow table: finds (or opens) the flow of each segment, orients it, drives the two
//! reassemblers and closes flows on FIN/RST, idleness, eviction, shedding or capture end.
//!
//! Flows are spread over [`shards`](FlowTable::shards) by a symmetric hash of the connection
//! ([`shard_of`]: both directions land in the same shard), each with its share of
//! `Limits::max_flows`. Each shard is a [`LinkedHashMap`] kept in activity order (every segment
//! moves its flow to the back), so its front is its least recently active flow: idle expiry pops
//! from the fronts and stops at the first live flow, and a full shard evicts its front. Flows
//! closed together (expiry, capture end) are handed over in the order of the last packet that
//! touched them ([`TcpSegment::index`]), the order one global activity list would give.
//!
//! Memory is one budget for the whole table (`Limits::flow_memory`): every flow is charged its
//! [`cost`](Flow::cost) (the entry and the heap its reassemblers and handler hold), recharged
//! after each segment that may have changed it, and beyond the budget the least worth flows among
//! the shards' least recently active ones are shed. (Flow counts spread evenly over the shards;
//! bytes do not, so a per-shard byte share would shed a shard's flows for one large handshake.)

use std::hash::{BuildHasher, Hash, Hasher};
use std::net::{IpAddr, SocketAddr};

use hashlink::LinkedHashMap;
use hashlink::linked_hash_map::RawEntryMut;

use crate::base::{PerSide, Timestamp};
use crate::config::Limits;
use crate::decode::TcpSegment;
use crate::stats::Stats;

use super::reassembly::{Reassembler, Sink};
use super::{CloseReason, ClosedFlow, Endpoints, FlowFactory, Side, StreamHandler};

/// Most shards a table is split into.
pub const MAX_SHARDS: usize = 64;
/// Flows per shard below which a table has fewer shards (a small `--max-flows` keeps one global
/// activity order).
const MIN_FLOWS_PER_SHARD: usize = 1024;

/// Shards of a table bounded to `max_flows` flows: `max_flows / 1024`, between 1 and
/// [`MAX_SHARDS`].
pub fn shard_count(max_flows: usize) -> usize {
    (max_flows / MIN_FLOWS_PER_SHARD).clamp(1, MAX_SHARDS)
}

/// The shard (of `shards`) of a segment's connection: the same for both directions, the same in
/// every run (a fixed mix of the endpoints, not the table's randomly seeded hash).
pub fn shard_of(seg: &TcpSegment<'_>, shards: usize) -> usize {
    FlowKey::of(seg).0.shard(shards)
}

/// The connection's point on `0..2³²` that decides which pipeline of a parallel run analyses
/// it: the same for both directions and in every run, and independent of [`shard_of`] (other
/// bits of the mix), so each pipeline's flows still spread over all of its table's shards.
pub fn flow_point(seg: &TcpSegment<'_>) -> u32 {
    FlowKey::of(seg).0.mix() as u32
}

/// One end of a connection, packed for cheap comparison and hashing: the address as a 128-bit
/// number (an IPv4 address in the low 32 bits) with its family kept apart, so an IPv4 flow never
/// matches an IPv6 one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Endpoint {
    ip: u128,
    /// The port in the low 16 bits, bit 16 set for IPv6.
    port_family: u32,
}

impl Endpoint {
    #[inline]
    fn new(ip: IpAddr, port: u16) -> Self {
        match ip {
            IpAddr::V4(ip) => Endpoint {
                ip: u128::from(ip.to_bits()),
                port_family: u32::from(port),
            },
            IpAddr::V6(ip) => Endpoint {
                ip: ip.to_bits(),
                port_family: u32::from(port) | 1 << 16,
            },
        }
    }

    fn fold(self) -> u64 {
        (self.ip as u64)
            ^ ((self.ip >> 64) as u64).rotate_left(17)
            ^ u64::from(self.port_family) << 40
    }
}

/// A connection's identity regardless of direction: its two endpoints, lower first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FlowKey {
    lo: Endpoint,
    hi: Endpoint,
}

impl FlowKey {
    /// The key, and whether `a` is its lower end.
    #[inline]
    fn new(a: Endpoint, b: Endpoint) -> (Self, bool) {
        if a <= b {
            (FlowKey { lo: a, hi: b }, true)
        } else {
            (FlowKey { lo: b, hi: a }, false)
        }
    }

    /// The key of a segment's connection, and whether the segment's sender is its lower end.
    #[inline]
    fn of(seg: &TcpSegment<'_>) -> (Self, bool) {
        Self::new(
            Endpoint::new(seg.src, seg.sport),
            Endpoint::new(seg.dst, seg.dport),
        )
    }

    /// A fixed mix of both ends.
    #[inline]
    fn mix(&self) -> u64 {
        let x = self.lo.fold() ^ self.hi.fold().rotate_left(29);
        (x ^ (x >> 31)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    /// The mix's top half, multiply-shifted onto `0..shards`.
    fn shard(&self, shards: usize) -> usize {
        ((u128::from(self.mix() >> 32) * shards as u128) >> 32) as usize
    }
}

/// Three words per key (every field once), instead of a hasher call per field.
impl Hash for FlowKey {
    fn hash<S: Hasher>(&self, state: &mut S) {
        state.write_u128(self.lo.ip);
        state.write_u128(self.hi.ip);
        state.write_u64(u64::from(self.lo.port_family) | u64::from(self.hi.port_family) << 32);
    }
}

/// One tracked connection.
struct Flow<H> {
    endpoints: Endpoints,
    /// The client is the key's lower end.
    client_is_lo: bool,
    handler: H,
    dirs: PerSide<Reassembler>,
    /// The client's ISN when its SYN was seen (tells a retransmitted SYN from port reuse).
    client_isn: Option<u32>,
    last_ts: Timestamp,
    /// [`TcpSegment::index`] of the last segment that touched the flow.
    last_index: u64,
    /// The handler wants no more payload and both directions stopped reassembling.
    bypass: bool,
    /// Bypassed, and no FIN waits to be reported: a segment without SYN, FIN or RST only moves
    /// the sequence tracking (the fast path of bulk data; it changes no buffer, so not the cost).
    quiet: bool,
    /// Memory charged to the budget for this flow when it was last recharged.
    cost: usize,
}

/// Memory of a flow besides its buffers: the entry itself and the table's bookkeeping.
fn base_cost<H>() -> usize {
    std::mem::size_of::<Flow<H>>()
        + std::mem::size_of::<FlowKey>()
        + 4 * std::mem::size_of::<usize>()
}

impl<H: StreamHandler> Flow<H> {
    fn cost(&self) -> usize {
        base_cost::<H>()
            + self.dirs.client.heap_bytes()
            + self.dirs.server.heap_bytes()
            + self.handler.heap_bytes()
    }

    /// Charges the flow's current cost to `total` (the table's bytes) in place of the last one.
    fn recharge(&mut self, total: &mut usize) {
        let now = self.cost();
        *total = *total - self.cost + now;
        self.cost = now;
    }

    #[inline]
    fn sender(&self, sender_is_lo: bool) -> Side {
        if sender_is_lo == self.client_is_lo {
            Side::Client
        } else {
            Side::Server
        }
    }

    fn any_fin(&self) -> bool {
        self.dirs.iter().any(|(_, d)| d.fin_seen())
    }

    /// Delivers everything held in both directions (holes skipped) before the flow leaves.
    fn flush(&mut self, ctx: &mut H::Ctx) {
        let Flow {
            handler,
            dirs: PerSide { client, server },
            last_ts: ts,
            ..
        } = self;
        client.flush(&mut Sink {
            handler: &mut *handler,
            ctx: &mut *ctx,
            side: Side::Client,
            ts: *ts,
        });
        server.flush(&mut Sink {
            handler,
            ctx,
            side: Side::Server,
            ts: *ts,
        });
    }

    fn close(mut self, reason: CloseReason, ctx: &mut H::Ctx) -> ClosedFlow<H> {
        self.flush(ctx);
        ClosedFlow {
            endpoints: self.endpoints,
            reason,
            last_ts: self.last_ts,
            last_index: self.last_index,
            handler: self.handler,
        }
    }
}

/// What one segment did to its flow.
enum Outcome {
    Open,
    Closed(CloseReason),
}

/// One shard: its flows, least recently active first, and its share of the flow limit.
struct Shard<H> {
    flows: LinkedHashMap<FlowKey, Flow<H>>,
    max_flows: usize,
}

/// Bounded table of live flows, in shards (each least recently active first).
pub struct FlowTable<H> {
    limits: Limits,
    shards: Vec<Shard<H>>,
    /// Flows in all shards.
    len: usize,
    /// Memory charged for every flow of every shard (see [`Flow::cost`]).
    bytes: usize,
}

/// Flows looked at, from the least recently active, for one that is worth nothing.
const SHED_SCAN: usize = 32;

impl<H: StreamHandler> FlowTable<H> {
    pub fn new(limits: &Limits) -> Self {
        let n = shard_count(limits.max_flows);
        let max = limits.max_flows.max(1);
        FlowTable {
            limits: limits.clone(),
            // The limit split as evenly as it goes: the shares add up to `max_flows`.
            shards: (0..n)
                .map(|i| Shard {
                    flows: LinkedHashMap::new(),
                    max_flows: (max / n + usize::from(i < max % n)).max(1),
                })
                .collect(),
            len: 0,
            bytes: 0,
        }
    }

    /// Memory charged for the flows and their buffers.
    pub fn heap_bytes(&self) -> usize {
        self.bytes
    }

    /// Removes shard `shard`'s least recently active flow.
    fn remove(&mut self, shard: usize, key: &FlowKey) -> Option<Flow<H>> {
        let flow = self.shards.get_mut(shard)?.flows.remove(key)?;
        self.len -= 1;
        self.bytes -= flow.cost;
        Some(flow)
    }

    fn pop_front(&mut self, shard: usize) -> Option<Flow<H>> {
        let (_, flow) = self.shards.get_mut(shard)?.flows.pop_front()?;
        self.len -= 1;
        self.bytes -= flow.cost;
        Some(flow)
    }

    /// The shard whose least recently active flow had the earliest last packet, among the shards
    /// whose least recently active flow `pick` accepts: merging the shards' fronts this way walks
    /// the flows in the order one global activity list would have.
    fn oldest_front(&self, pick: impl Fn(&Flow<H>) -> bool) -> Option<usize> {
        self.shards
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let (_, f) = s.flows.front()?;
                pick(f).then_some((f.last_index, i))
            })
            .min()
            .map(|(_, i)| i)
    }

    /// Sheds flows until the charged memory fits `Limits::flow_memory` again: among the least
    /// recently active flows of every shard, those worth least first (then the least recently
    /// active). The budget is one for the whole table: flow counts spread evenly over the shards,
    /// bytes do not (one large handshake would overflow a shard's share).
    fn shed(&mut self, keep: FlowKey, ctx: &mut H::Ctx, closed: &mut Vec<ClosedFlow<H>>) {
        let per_shard = (SHED_SCAN / self.shards.len()).max(1);
        while self.bytes > self.limits.flow_memory && self.len > 1 {
            let victim = self
                .shards
                .iter()
                .enumerate()
                .flat_map(|(i, s)| s.flows.iter().take(per_shard).map(move |(k, f)| (i, k, f)))
                .filter(|(_, k, _)| **k != keep)
                .min_by_key(|(_, _, f)| (f.handler.worth(), f.last_index))
                .map(|(i, k, _)| (i, *k));
            let Some(flow) = victim.and_then(|(i, k)| self.shards[i].flows.remove(&k)) else {
                return;
            };
            self.len -= 1;
            self.bytes -= flow.cost;
            ctx.as_mut().flows_shed += 1;
            closed.push(flow.close(CloseReason::Evicted, ctx));
        }
    }

    /// How many shards the table has ([`shard_count`] of `Limits::max_flows`).
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// Feeds one segment. Flows that close because of it (FIN/RST, or an eviction it caused) are
    /// pushed to `closed`. When the segment's flow is still open, `poll` gets its handler (to
    /// collect a decided result) and its answer is returned. `ctx` is passed to the handlers; the
    /// table counts into its [`Stats`].
    pub fn segment<F: FlowFactory<Handler = H>, R>(
        &mut self,
        seg: TcpSegment<'_>,
        factory: &mut F,
        ctx: &mut H::Ctx,
        closed: &mut Vec<ClosedFlow<H>>,
        poll: impl FnOnce(&mut H) -> R,
    ) -> Option<R> {
        let (key, sender_is_lo) = FlowKey::of(&seg);
        let shard_index = key.shard(self.shards.len());
        let window = self.limits.handshake_window;
        let shard = &mut self.shards[shard_index];
        // The shard's most recently active flow is found without hashing and is already at the
        // back of the activity order: a transfer's segments mostly follow one another. (A SYN
        // that may reuse the ports takes the general path.)
        let bare_syn = seg.flags.syn && !seg.flags.ack;
        let mut back = shard.flows.cursor_back_mut();
        let flow = match back.current() {
            Some((back, flow)) if !bare_syn && *back == key => flow,
            _ => {
                // Hashed once; the lookups below reuse it.
                let hash = shard.flows.hasher().hash_one(key);
                self.close_on_port_reuse(shard_index, hash, &key, &seg, ctx, closed);
                match self.shards[shard_index]
                    .flows
                    .raw_entry_mut()
                    .from_key_hashed_nocheck(hash, &key)
                {
                    RawEntryMut::Occupied(mut entry) => {
                        entry.to_back();
                        entry.into_mut()
                    }
                    RawEntryMut::Vacant(_) => {
                        return self.open_and_feed(
                            seg,
                            key,
                            hash,
                            shard_index,
                            sender_is_lo,
                            factory,
                            ctx,
                            closed,
                            poll,
                        );
                    }
                }
            }
        };
        match Self::feed(flow, &seg, sender_is_lo, window, &mut self.bytes, ctx) {
            Outcome::Open if self.bytes <= self.limits.flow_memory => Some(poll(&mut flow.handler)),
            Outcome::Open => self.shed_and_poll(shard_index, key, ctx, closed, poll),
            Outcome::Closed(reason) => {
                let flow = self.remove(shard_index, &key)?;
                closed.push(flow.close(reason, ctx));
                None
            }
        }
    }

    /// A new SYN on a finished connection (or with another ISN) is a new connection: port reuse.
    /// The old flow is closed.
    fn close_on_port_reuse(
        &mut self,
        shard_index: usize,
        hash: u64,
        key: &FlowKey,
        seg: &TcpSegment<'_>,
        ctx: &mut H::Ctx,
        closed: &mut Vec<ClosedFlow<H>>,
    ) {
        let reused = seg.flags.syn
            && !seg.flags.ack
            && self.shards[shard_index]
                .flows
                .raw_entry()
                .from_key_hashed_nocheck(hash, key)
                .is_some_and(|(_, old)| {
                    old.any_fin() || old.client_isn.is_some_and(|isn| isn != seg.seq)
                });
        if let Some(flow) = reused.then(|| self.remove(shard_index, key)).flatten() {
            let reason = if flow.any_fin() {
                CloseReason::Fin
            } else {
                CloseReason::IdleTimeout
            };
            closed.push(flow.close(reason, ctx));
        }
    }

    /// A segment of no known flow: opens one if the factory wants it, then feeds the segment.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn open_and_feed<F: FlowFactory<Handler = H>, R>(
        &mut self,
        seg: TcpSegment<'_>,
        key: FlowKey,
        hash: u64,
        shard_index: usize,
        sender_is_lo: bool,
        factory: &mut F,
        ctx: &mut H::Ctx,
        closed: &mut Vec<ClosedFlow<H>>,
        poll: impl FnOnce(&mut H) -> R,
    ) -> Option<R> {
        let flow = Self::open(&seg, sender_is_lo, factory, ctx.as_mut())?;
        self.make_room(shard_index, ctx, closed);
        ctx.as_mut().flows_opened += 1;
        self.len += 1;
        let window = self.limits.handshake_window;
        let shard = &mut self.shards[shard_index];
        let (_, flow) = shard
            .flows
            .raw_entry_mut()
            .from_key_hashed_nocheck(hash, &key)
            .or_insert_with(|| (key, flow));
        match Self::feed(flow, &seg, sender_is_lo, window, &mut self.bytes, ctx) {
            Outcome::Open if self.bytes <= self.limits.flow_memory => Some(poll(&mut flow.handler)),
            Outcome::Open => self.shed_and_poll(shard_index, key, ctx, closed, poll),
            Outcome::Closed(reason) => {
                let flow = shard.flows.remove(&key)?;
                self.len -= 1;
                self.bytes -= flow.cost;
                closed.push(flow.close(reason, ctx));
                None
            }
        }
    }

    /// The segment's flow is open but the table is over its memory budget: sheds other flows, then
    /// polls the flow's handler.
    #[inline(never)]
    fn shed_and_poll<R>(
        &mut self,
        shard: usize,
        key: FlowKey,
        ctx: &mut H::Ctx,
        closed: &mut Vec<ClosedFlow<H>>,
        poll: impl FnOnce(&mut H) -> R,
    ) -> Option<R> {
        self.shed(key, ctx, closed);
        self.shards[shard]
            .flows
            .get_mut(&key)
            .map(|f| poll(&mut f.handler))
    }

    /// Orients a segment that matches no flow and asks the factory for a handler.
    fn open<F: FlowFactory<Handler = H>>(
        seg: &TcpSegment<'_>,
        sender_is_lo: bool,
        factory: &mut F,
        stats: &mut Stats,
    ) -> Option<Flow<H>> {
        // RST and pure ACK/FIN segments do not start a flow (they end or acknowledge one we missed).
        if seg.flags.rst || (!seg.flags.syn && seg.payload.is_empty()) {
            stats.segments_ignored += 1;
            return None;
        }
        let sender = match (seg.flags.syn, seg.flags.ack) {
            (true, false) => Side::Client,
            (true, true) => Side::Server,
            _ if factory.is_server_port(seg.dport) => Side::Client,
            _ if factory.is_server_port(seg.sport) => Side::Server,
            // Unknown ports (any-port mode): guess the lower port is the server's.
            _ if seg.dport <= seg.sport => Side::Client,
            _ => Side::Server,
        };
        let src = SocketAddr::new(seg.src, seg.sport);
        let dst = SocketAddr::new(seg.dst, seg.dport);
        let endpoints = match sender {
            Side::Client => Endpoints {
                client: src,
                server: dst,
            },
            Side::Server => Endpoints {
                client: dst,
                server: src,
            },
        };
        let Some(handler) = factory.open(seg, sender, endpoints) else {
            stats.segments_ignored += 1;
            return None;
        };
        Some(Flow {
            endpoints,
            client_is_lo: sender_is_lo == (sender == Side::Client),
            handler,
            dirs: PerSide::from_fn(|_| Reassembler::new()),
            client_isn: None,
            last_ts: seg.ts,
            last_index: seg.index,
            bypass: false,
            quiet: false,
            cost: 0,
        })
    }

    /// Evicts the shard's least recently active flows until one more fits.
    fn make_room(&mut self, shard: usize, ctx: &mut H::Ctx, closed: &mut Vec<ClosedFlow<H>>) {
        while self.shards[shard].flows.len() >= self.shards[shard].max_flows {
            let Some(flow) = self.pop_front(shard) else {
                return;
            };
            ctx.as_mut().flows_evicted += 1;
            closed.push(flow.close(CloseReason::Evicted, ctx));
        }
    }

    /// Applies one segment to its flow.
    #[inline(always)]
    fn feed(
        flow: &mut Flow<H>,
        seg: &TcpSegment<'_>,
        sender_is_lo: bool,
        window: usize,
        bytes: &mut usize,
        ctx: &mut H::Ctx,
    ) -> Outcome {
        if flow.quiet && !(seg.flags.syn || seg.flags.fin || seg.flags.rst) {
            // A decided connection's data or ACK: only the sequence tracking moves (nothing is
            // reassembled, nothing reaches the handler), as the general path would do.
            flow.last_ts = flow.last_ts.max(seg.ts);
            flow.last_index = seg.index;
            if !seg.payload.is_empty() {
                let side = flow.sender(sender_is_lo);
                flow.dirs[side].touch(seg.seq);
            }
            return Outcome::Open;
        }
        let outcome = Self::feed_general(flow, seg, sender_is_lo, window, ctx);
        if let Outcome::Open = outcome {
            // Buffers may have grown or been released: the table's bytes follow. (A flow that
            // closes leaves with what it was last charged.)
            flow.recharge(bytes);
        }
        outcome
    }

    /// [`FlowTable::feed`] for every segment but a quiet flow's data and ACKs.
    #[inline(never)]
    fn feed_general(
        flow: &mut Flow<H>,
        seg: &TcpSegment<'_>,
        sender_is_lo: bool,
        window: usize,
        ctx: &mut H::Ctx,
    ) -> Outcome {
        let side = flow.sender(sender_is_lo);
        flow.last_ts = flow.last_ts.max(seg.ts);
        flow.last_index = seg.index;
        let ts = seg.ts;

        if seg.flags.rst {
            flow.flush(ctx);
            flow.handler.on_close_from(ctx, side, ts, true);
            return Outcome::Closed(CloseReason::Rst(side));
        }

        let Flow {
            handler,
            dirs: PerSide { client, server },
            client_isn,
            ..
        } = flow;
        let (dir, peer) = match side {
            Side::Client => (client, server),
            Side::Server => (server, client),
        };
        if seg.flags.syn {
            dir.syn(seg.seq);
            if side == Side::Client && !seg.flags.ack {
                client_isn.get_or_insert(seg.seq);
            }
        }
        if !flow.bypass && !handler.wants_data() {
            // Decided: from here on a segment only moves the sequence and FIN tracking.
            dir.bypass();
            peer.bypass();
            flow.bypass = true;
        }
        // The peer's receiver acknowledged bytes we may never have seen.
        if seg.flags.ack {
            peer.acked(
                seg.ack,
                &mut Sink {
                    handler: &mut *handler,
                    ctx: &mut *ctx,
                    side: side.other(),
                    ts,
                },
            );
        }
        if !seg.payload.is_empty() || seg.flags.fin {
            let seq = if seg.flags.syn {
                seg.seq.wrapping_add(1)
            } else {
                seg.seq
            };
            dir.segment(
                seq,
                seg.payload,
                seg.flags.fin,
                window,
                &mut Sink {
                    handler,
                    ctx: &mut *ctx,
                    side,
                    ts,
                },
            );
        }

        if flow.dirs.iter().all(|(_, d)| d.fin_seen()) {
            // Both sides are done: whatever is still missing will not come.
            flow.flush(ctx);
            return Outcome::Closed(CloseReason::Fin);
        }
        flow.quiet = flow.bypass && flow.dirs.iter().all(|(_, d)| !d.fin_pending());
        Outcome::Open
    }

    /// Closes flows idle for longer than `Limits::idle_timeout_us` at packet time `now`, at most
    /// `max` of them, in the order of their last packets (call again while it returns `max`: the
    /// caller finalizes each batch, so a burst of expiries never holds every closed flow at once).
    ///
    /// Every idle flow is closed, whatever its place in its shard's activity order:
    /// `disorder_us` is how far packet times have gone back so far in the capture, so a shard's
    /// scan stops at the first flow whose last packet is that much younger than the idle
    /// timeout (no later flow can be idle). In time order (`disorder_us` 0) it stops at the first
    /// live flow: O(shards) per flow closed. Which flows close thus depends on each flow alone,
    /// not on which others share its table (a parallel run's tables close the same ones).
    pub fn expire(
        &mut self,
        now: Timestamp,
        disorder_us: i64,
        max: usize,
        ctx: &mut H::Ctx,
        closed: &mut Vec<ClosedFlow<H>>,
    ) -> usize {
        let idle = self.limits.idle_timeout_us;
        let mut n = 0;
        while n < max {
            // Each shard's first idle flow within reach; the one with the earliest last packet.
            let mut oldest: Option<(u64, usize, FlowKey, bool)> = None;
            for (i, shard) in self.shards.iter().enumerate() {
                for (pos, (key, f)) in shard.flows.iter().enumerate() {
                    let age = now.since(f.last_ts);
                    if age > idle {
                        if oldest.is_none_or(|o| f.last_index < o.0) {
                            oldest = Some((f.last_index, i, *key, pos == 0));
                        }
                        break;
                    }
                    if age.saturating_add(disorder_us) <= idle {
                        break;
                    }
                }
            }
            let Some((_, shard, key, front)) = oldest else {
                break;
            };
            let flow = if front {
                self.pop_front(shard)
            } else {
                self.remove(shard, &key)
            };
            let Some(flow) = flow else {
                break;
            };
            n += 1;
            // A flow that had sent one FIN and then went quiet ended normally.
            let reason = if flow.any_fin() {
                CloseReason::Fin
            } else {
                ctx.as_mut().flows_timed_out += 1;
                CloseReason::IdleTimeout
            };
            closed.push(flow.close(reason, ctx));
        }
        n
    }

    /// Closes up to `max` flows (capture end) in the order of their last packets, delivering what
    /// each still holds; the caller repeats until the table is empty, finalizing each batch.
    pub fn drain(&mut self, max: usize, ctx: &mut H::Ctx, closed: &mut Vec<ClosedFlow<H>>) {
        for _ in 0..max {
            let Some(flow) = self.oldest_front(|_| true).and_then(|i| self.pop_front(i)) else {
                return;
            };
            closed.push(flow.close(CloseReason::CaptureEnd, ctx));
        }
    }

    /// Flows currently tracked.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The handler of the flow between `a` and `b` (either order), if tracked.
    pub fn handler_mut(&mut self, a: SocketAddr, b: SocketAddr) -> Option<&mut H> {
        let (key, _) = FlowKey::new(
            Endpoint::new(a.ip(), a.port()),
            Endpoint::new(b.ip(), b.port()),
        );
        let shard = key.shard(self.shards.len());
        self.shards[shard]
            .flows
            .get_mut(&key)
            .map(|f| &mut f.handler)
    }
}

#[cfg(test)]
mod tests;
