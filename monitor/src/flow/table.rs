//! The flow table: finds (or opens) the flow of each segment, orients it, drives the two
//! reassemblers and closes flows on FIN/RST, idleness, eviction or capture end.
//!
//! Flows live in a [`LinkedHashMap`] kept in activity order (every segment moves its flow to the
//! back), so the front is always the least recently active flow: idle expiry pops from the front
//! and stops at the first live flow, and a full table evicts the front.

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

/// One end of a connection, packed for cheap comparison and hashing: the address as a 128-bit
/// number (an IPv4 address in the low 32 bits) with its family kept apart, so an IPv4 flow never
/// matches an IPv6 one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Endpoint {
    v6: bool,
    ip: u128,
    port: u16,
}

impl Endpoint {
    fn new(ip: IpAddr, port: u16) -> Self {
        match ip {
            IpAddr::V4(ip) => Endpoint {
                v6: false,
                ip: u128::from(ip.to_bits()),
                port,
            },
            IpAddr::V6(ip) => Endpoint {
                v6: true,
                ip: ip.to_bits(),
                port,
            },
        }
    }
}

/// A connection's identity regardless of direction: its two endpoints, lower first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FlowKey {
    lo: Endpoint,
    hi: Endpoint,
}

impl FlowKey {
    fn new(a: Endpoint, b: Endpoint) -> Self {
        if a <= b {
            FlowKey { lo: a, hi: b }
        } else {
            FlowKey { lo: b, hi: a }
        }
    }

    fn of(seg: &TcpSegment) -> Self {
        Self::new(
            Endpoint::new(seg.src, seg.sport),
            Endpoint::new(seg.dst, seg.dport),
        )
    }
}

/// Three words per key (every field once), instead of a hasher call per field.
impl Hash for FlowKey {
    fn hash<S: Hasher>(&self, state: &mut S) {
        state.write_u128(self.lo.ip);
        state.write_u128(self.hi.ip);
        state.write_u64(
            u64::from(self.lo.port)
                | u64::from(self.hi.port) << 16
                | u64::from(self.lo.v6) << 32
                | u64::from(self.hi.v6) << 33,
        );
    }
}

/// One tracked connection.
struct Flow<H> {
    endpoints: Endpoints,
    handler: H,
    dirs: PerSide<Reassembler>,
    /// The client's ISN when its SYN was seen (tells a retransmitted SYN from port reuse).
    client_isn: Option<u32>,
    last_ts: Timestamp,
}

impl<H: StreamHandler> Flow<H> {
    fn sender(&self, seg: &TcpSegment) -> Side {
        if SocketAddr::new(seg.src, seg.sport) == self.endpoints.client {
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
            handler: self.handler,
        }
    }
}

/// What one segment did to its flow.
enum Outcome {
    Open,
    Closed(CloseReason),
}

/// Bounded table of live flows (least recently active first).
pub struct FlowTable<H> {
    limits: Limits,
    flows: LinkedHashMap<FlowKey, Flow<H>>,
}

impl<H: StreamHandler> FlowTable<H> {
    pub fn new(limits: &Limits) -> Self {
        FlowTable {
            limits: limits.clone(),
            flows: LinkedHashMap::new(),
        }
    }

    /// Feeds one segment. Flows that close because of it (FIN/RST, or an eviction it caused) are
    /// pushed to `closed`. Returns the handler of the segment's flow if it is still open, so the
    /// caller can poll it for decided results. `ctx` is passed to the handlers; the table counts
    /// into its [`Stats`].
    pub fn segment<F: FlowFactory<Handler = H>>(
        &mut self,
        seg: TcpSegment,
        factory: &mut F,
        ctx: &mut H::Ctx,
        closed: &mut Vec<ClosedFlow<H>>,
    ) -> Option<&mut H> {
        let key = FlowKey::of(&seg);
        // Hashed once; the lookups below reuse it.
        let hash = self.flows.hasher().hash_one(key);

        // A new SYN on a finished connection (or with another ISN) is a new connection: port reuse.
        if seg.flags.syn
            && !seg.flags.ack
            && let RawEntryMut::Occupied(entry) = self
                .flows
                .raw_entry_mut()
                .from_key_hashed_nocheck(hash, &key)
            && (entry.get().any_fin() || entry.get().client_isn.is_some_and(|isn| isn != seg.seq))
        {
            let flow = entry.remove();
            let reason = if flow.any_fin() {
                CloseReason::Fin
            } else {
                CloseReason::IdleTimeout
            };
            closed.push(flow.close(reason, ctx));
        }

        let known = match self
            .flows
            .raw_entry_mut()
            .from_key_hashed_nocheck(hash, &key)
        {
            RawEntryMut::Occupied(mut entry) => {
                entry.to_back();
                true
            }
            RawEntryMut::Vacant(_) => false,
        };
        if !known {
            let flow = Self::open(&seg, factory, ctx.as_mut())?;
            self.make_room(ctx, closed);
            self.flows.insert(key, flow);
            ctx.as_mut().flows_opened += 1;
        }
        let RawEntryMut::Occupied(mut entry) = self
            .flows
            .raw_entry_mut()
            .from_key_hashed_nocheck(hash, &key)
        else {
            return None;
        };
        match Self::feed(entry.get_mut(), &seg, self.limits.handshake_window, ctx) {
            Outcome::Open => Some(&mut entry.into_mut().handler),
            Outcome::Closed(reason) => {
                closed.push(entry.remove().close(reason, ctx));
                None
            }
        }
    }

    /// Orients a segment that matches no flow and asks the factory for a handler.
    fn open<F: FlowFactory<Handler = H>>(
        seg: &TcpSegment,
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
            handler,
            dirs: PerSide::from_fn(|_| Reassembler::new()),
            client_isn: None,
            last_ts: seg.ts,
        })
    }

    /// Evicts least recently active flows until one more fits.
    fn make_room(&mut self, ctx: &mut H::Ctx, closed: &mut Vec<ClosedFlow<H>>) {
        while self.flows.len() >= self.limits.max_flows.max(1) {
            let Some((_, flow)) = self.flows.pop_front() else {
                return;
            };
            ctx.as_mut().flows_evicted += 1;
            closed.push(flow.close(CloseReason::Evicted, ctx));
        }
    }

    /// Applies one segment to its flow.
    fn feed(flow: &mut Flow<H>, seg: &TcpSegment, window: usize, ctx: &mut H::Ctx) -> Outcome {
        let side = flow.sender(seg);
        flow.last_ts = flow.last_ts.max(seg.ts);
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
        if !handler.wants_data() {
            dir.bypass();
            peer.bypass();
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
                &seg.payload,
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
        Outcome::Open
    }

    /// Closes flows idle for longer than `Limits::idle_timeout_us` at packet time `now`. Costs
    /// O(flows closed): the scan stops at the first flow still live.
    pub fn expire(&mut self, now: Timestamp, ctx: &mut H::Ctx, closed: &mut Vec<ClosedFlow<H>>) {
        while let Some((_, flow)) = self.flows.front() {
            if now.since(flow.last_ts) <= self.limits.idle_timeout_us {
                return;
            }
            let Some((_, flow)) = self.flows.pop_front() else {
                return;
            };
            // A flow that had sent one FIN and then went quiet ended normally.
            let reason = if flow.any_fin() {
                CloseReason::Fin
            } else {
                ctx.as_mut().flows_timed_out += 1;
                CloseReason::IdleTimeout
            };
            closed.push(flow.close(reason, ctx));
        }
    }

    /// Closes every flow (capture end), delivering what each still holds.
    pub fn drain(&mut self, ctx: &mut H::Ctx, closed: &mut Vec<ClosedFlow<H>>) {
        while let Some((_, flow)) = self.flows.pop_front() {
            closed.push(flow.close(CloseReason::CaptureEnd, ctx));
        }
    }

    /// Flows currently tracked.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The handler of the flow between `a` and `b` (either order), if tracked.
    pub fn handler_mut(&mut self, a: SocketAddr, b: SocketAddr) -> Option<&mut H> {
        self.flows
            .get_mut(&FlowKey::new(
                Endpoint::new(a.ip(), a.port()),
                Endpoint::new(b.ip(), b.port()),
            ))
            .map(|f| &mut f.handler)
    }
}

#[cfg(test)]
mod tests;
