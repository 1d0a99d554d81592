//! Flow: connection tracking and TCP reassembly.
//!
//! Consumes [`TcpSegment`]s; produces, per connection and per direction, the payload bytes in order
//! (gaps marked), delivered to a [`StreamHandler`] the caller supplies when the flow opens. The flow
//! table is bounded (`Limits::max_flows`, eviction of the least recently active flow of a shard)
//! and each direction buffers at most `Limits::handshake_window` bytes; flows and their buffers
//! together stay within `Limits::flow_memory` (the least worth shed first, see [`Worth`]); every
//! drop is counted in [`Stats`]. Flows are sharded by a symmetric hash of the connection ([`shard_of`]), so a
//! parallel analysis can give each worker whole shards.
//! Nothing here knows about TLS.

pub mod reassembly;
pub mod table;

use std::net::SocketAddr;

pub use table::{FlowTable, flow_point, shard_count, shard_of};

pub use crate::base::Side;
use crate::base::Timestamp;
use crate::decode::TcpSegment;
use crate::stats::Stats;

/// The two ends of a connection, oriented.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Endpoints {
    pub client: SocketAddr,
    pub server: SocketAddr,
}

/// How a flow ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// Both directions sent FIN (or one FIN and the flow then went idle).
    Fin,
    /// A RST from this side.
    Rst(Side),
    /// No packet for `Limits::idle_timeout_us`.
    IdleTimeout,
    /// Evicted because the flow table was full.
    Evicted,
    /// The capture ended (file end, or live shutdown) with the flow still open.
    CaptureEnd,
}

/// What a flow's consumer sees: in-order bytes per direction and the TCP lifecycle.
pub trait StreamHandler {
    /// Shared state handlers need while consuming data (e.g. a certificate cache and the
    /// counters); the table passes it through and uses its [`Stats`] for its own counters.
    type Ctx: AsMut<Stats>;
    /// In-order payload bytes from `side`.
    fn on_data(&mut self, ctx: &mut Self::Ctx, side: Side, ts: Timestamp, data: &[u8]);
    /// `bytes` of `side`'s stream were lost and skipped; the next `on_data` continues after the hole.
    fn on_gap(&mut self, ctx: &mut Self::Ctx, side: Side, bytes: u64);
    /// `side` sent FIN (after all its data was delivered) or RST.
    fn on_close_from(&mut self, ctx: &mut Self::Ctx, side: Side, ts: Timestamp, rst: bool);
    /// False once the handler needs no more payload: the table then skips reassembly for the flow
    /// (the fast path for bulk application data) but still tracks FIN/RST and idleness.
    fn wants_data(&self) -> bool;
    /// Heap memory the handler holds (buffers, parsed messages), for the memory budget.
    fn heap_bytes(&self) -> usize {
        0
    }
    /// How much is lost if the flow is shed to stay within the memory budget: flows that never
    /// showed anything useful go first.
    fn worth(&self) -> Worth {
        Worth::InProgress
    }
}

/// What a flow is worth keeping, least first (see [`StreamHandler::worth`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Worth {
    /// Nothing useful seen yet (a SYN, bytes that are not a hello).
    Nothing,
    /// Already reported; kept only to see it close.
    Reported,
    /// A handshake in progress.
    InProgress,
}

/// Decides whether a segment that matches no flow opens one, and with which handler.
pub trait FlowFactory {
    type Handler: StreamHandler;
    /// `sender` is the side that sent `seg`, as the table inferred it (SYN, SYN-ACK, or
    /// `server_port_hint`). Return `None` to ignore the segment (counted as `segments_ignored`).
    fn open(
        &mut self,
        seg: &TcpSegment,
        sender: Side,
        endpoints: Endpoints,
    ) -> Option<Self::Handler>;
    /// For a segment without SYN: is `port` a server port? Used to orient mid-stream flows.
    fn is_server_port(&self, port: u16) -> bool;
}

/// A flow that left the table, with its handler, for the caller to finalize.
pub struct ClosedFlow<H> {
    pub endpoints: Endpoints,
    pub reason: CloseReason,
    pub last_ts: Timestamp,
    /// [`TcpSegment::index`] of its last segment (orders flows closed together).
    pub last_index: u64,
    pub handler: H,
}
