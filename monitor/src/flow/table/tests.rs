use std::net::{IpAddr, Ipv4Addr};

use super::*;
use crate::decode::TcpFlags;
use crate::flow::Worth;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Data(Side, Vec<u8>),
    Gap(Side, u64),
    Close(Side, bool),
}

/// Records every call; stops wanting data after `budget` data calls, if set.
#[derive(Default)]
struct Rec {
    events: Vec<Ev>,
    budget: Option<usize>,
    worth: Option<Worth>,
}

impl Rec {
    fn stream(&self, side: Side) -> Vec<u8> {
        let mut v = Vec::new();
        for e in &self.events {
            if let Ev::Data(s, d) = e
                && *s == side
            {
                v.extend_from_slice(d);
            }
        }
        v
    }
}

impl StreamHandler for Rec {
    type Ctx = Stats;
    fn on_data(&mut self, _: &mut Stats, side: Side, _: Timestamp, data: &[u8]) {
        self.events.push(Ev::Data(side, data.to_vec()));
        if let Some(b) = self.budget.as_mut() {
            *b = b.saturating_sub(1);
        }
    }
    fn on_gap(&mut self, _: &mut Stats, side: Side, bytes: u64) {
        self.events.push(Ev::Gap(side, bytes));
    }
    fn on_close_from(&mut self, _: &mut Stats, side: Side, _: Timestamp, rst: bool) {
        self.events.push(Ev::Close(side, rst));
    }
    fn wants_data(&self) -> bool {
        self.budget != Some(0)
    }
    fn worth(&self) -> Worth {
        self.worth.unwrap_or(Worth::InProgress)
    }
}

struct Factory {
    server_ports: Vec<u16>,
    refuse: bool,
    budget: Option<usize>,
    /// What flows from these client ports are worth (others: in progress).
    worth: Vec<(u16, Worth)>,
    opened: Vec<(Side, Endpoints)>,
}

impl Default for Factory {
    fn default() -> Self {
        Factory {
            server_ports: vec![443],
            refuse: false,
            budget: None,
            worth: Vec::new(),
            opened: Vec::new(),
        }
    }
}

impl FlowFactory for Factory {
    type Handler = Rec;
    fn open(&mut self, _: &TcpSegment, sender: Side, endpoints: Endpoints) -> Option<Rec> {
        self.opened.push((sender, endpoints));
        let worth = self
            .worth
            .iter()
            .find(|(port, _)| *port == endpoints.client.port())
            .map(|&(_, w)| w);
        (!self.refuse).then(|| Rec {
            events: Vec::new(),
            budget: self.budget,
            worth,
        })
    }
    fn is_server_port(&self, port: u16) -> bool {
        self.server_ports.contains(&port)
    }
}

const CLIENT: (Ipv4Addr, u16) = (Ipv4Addr::new(10, 0, 0, 1), 40000);
const SERVER: (Ipv4Addr, u16) = (Ipv4Addr::new(10, 0, 0, 2), 443);

#[derive(Clone, Copy)]
enum F {
    Syn,
    SynAck,
    Ack,
    Fin,
    Rst,
}

fn seg_from(
    from: Side,
    client_port: u16,
    seq: u32,
    ack: u32,
    flags: F,
    data: &[u8],
    ts_s: i64,
) -> TcpSegment<'_> {
    let (src, dst) = match from {
        Side::Client => ((CLIENT.0, client_port), SERVER),
        Side::Server => (SERVER, (CLIENT.0, client_port)),
    };
    let flags = match flags {
        F::Syn => TcpFlags {
            syn: true,
            ..TcpFlags::default()
        },
        F::SynAck => TcpFlags {
            syn: true,
            ack: true,
            ..TcpFlags::default()
        },
        F::Ack => TcpFlags {
            ack: true,
            ..TcpFlags::default()
        },
        F::Fin => TcpFlags {
            ack: true,
            fin: true,
            ..TcpFlags::default()
        },
        F::Rst => TcpFlags {
            rst: true,
            ..TcpFlags::default()
        },
    };
    TcpSegment {
        ts: Timestamp::from_micros(ts_s * 1_000_000),
        src: IpAddr::V4(src.0),
        dst: IpAddr::V4(dst.0),
        sport: src.1,
        dport: dst.1,
        seq,
        ack,
        flags,
        payload: data,
        vlan: None,
        index: 0,
    }
}

fn seg(from: Side, seq: u32, ack: u32, flags: F, data: &[u8]) -> TcpSegment<'_> {
    seg_from(from, CLIENT.1, seq, ack, flags, data, 1)
}

use Side::{Client as C, Server as S};

struct Harness {
    /// Segments fed so far (their index).
    fed: u64,
    table: FlowTable<Rec>,
    factory: Factory,
    stats: Stats,
    closed: Vec<ClosedFlow<Rec>>,
}

impl Harness {
    fn new(limits: Limits) -> Self {
        Harness {
            fed: 0,
            table: FlowTable::new(&limits),
            factory: Factory::default(),
            stats: Stats::default(),
            closed: Vec::new(),
        }
    }
    fn feed(&mut self, mut s: TcpSegment<'_>) -> bool {
        self.fed += 1;
        s.index = self.fed;
        self.table
            .segment(
                s,
                &mut self.factory,
                &mut self.stats,
                &mut self.closed,
                |_| (),
            )
            .is_some()
    }
    /// Events of the single flow (open or closed).
    fn events(&mut self) -> Vec<Ev> {
        if let Some(f) = self.closed.first() {
            return f.handler.events.clone();
        }
        let a = SocketAddr::new(IpAddr::V4(CLIENT.0), CLIENT.1);
        let b = SocketAddr::new(IpAddr::V4(SERVER.0), SERVER.1);
        self.table
            .handler_mut(a, b)
            .map(|h| h.events.clone())
            .unwrap_or_default()
    }
    fn handshake(&mut self, cisn: u32, sisn: u32) {
        self.feed(seg(C, cisn, 0, F::Syn, b""));
        self.feed(seg(S, sisn, cisn.wrapping_add(1), F::SynAck, b""));
        self.feed(seg(
            C,
            cisn.wrapping_add(1),
            sisn.wrapping_add(1),
            F::Ack,
            b"",
        ));
    }
    fn stream(&mut self, side: Side) -> Vec<u8> {
        let ev = self.events();
        Rec {
            events: ev,
            budget: None,
            worth: None,
        }
        .stream(side)
    }
}

fn h() -> Harness {
    Harness::new(Limits::default())
}

#[test]
fn in_order_exchange_and_fin_close() {
    let mut t = h();
    t.handshake(100, 500);
    assert_eq!(
        t.factory.opened,
        vec![(
            C,
            Endpoints {
                client: SocketAddr::new(IpAddr::V4(CLIENT.0), CLIENT.1),
                server: SocketAddr::new(IpAddr::V4(SERVER.0), SERVER.1)
            }
        )]
    );
    assert!(t.feed(seg(C, 101, 501, F::Ack, b"hello")));
    assert!(t.feed(seg(S, 501, 106, F::Ack, b"world")));
    assert!(t.feed(seg(C, 106, 506, F::Fin, b"!")));
    assert!(!t.feed(seg(S, 506, 108, F::Fin, b"")));
    assert_eq!(t.closed.len(), 1);
    assert_eq!(t.closed[0].reason, CloseReason::Fin);
    assert!(t.table.is_empty());
    assert_eq!(
        t.events(),
        vec![
            Ev::Data(C, b"hello".to_vec()),
            Ev::Data(S, b"world".to_vec()),
            Ev::Data(C, b"!".to_vec()),
            Ev::Close(C, false),
            Ev::Close(S, false),
        ]
    );
    assert_eq!(t.stats.flows_opened, 1);
    // The last ACK matches no flow and opens none.
    assert!(!t.feed(seg(C, 108, 507, F::Ack, b"")));
    assert_eq!(t.stats.segments_ignored, 1);
    assert_eq!(t.stats.reassembly_gaps, 0);
}

#[test]
fn out_of_order_segments_are_reordered() {
    let mut t = h();
    t.handshake(100, 500);
    t.feed(seg(C, 101, 501, F::Ack, b"aaa"));
    t.feed(seg(C, 107, 501, F::Ack, b"ccc"));
    t.feed(seg(C, 110, 501, F::Ack, b"ddd"));
    assert_eq!(t.stream(C), b"aaa");
    t.feed(seg(C, 104, 501, F::Ack, b"bbb"));
    assert_eq!(t.stream(C), b"aaabbbcccddd");
    assert_eq!(t.stats.reassembly_gaps, 0);
    assert_eq!(t.stats.overlap_conflicts, 0);
}

#[test]
fn retransmission_first_copy_wins_and_conflicts_count() {
    let mut t = h();
    t.handshake(100, 500);
    t.feed(seg(C, 101, 501, F::Ack, b"abc"));
    // Retransmission of delivered data (even with other bytes) is ignored.
    t.feed(seg(C, 101, 501, F::Ack, b"XXX"));
    // Held out of order, then retransmitted with one byte different.
    t.feed(seg(C, 110, 501, F::Ack, b"XYZ"));
    t.feed(seg(C, 110, 501, F::Ack, b"XQZ"));
    assert_eq!(t.stats.overlap_conflicts, 1);
    t.feed(seg(C, 104, 501, F::Ack, b"defghi"));
    assert_eq!(t.stream(C), b"abcdefghiXYZ");
    // Identical retransmission: no conflict.
    t.feed(seg(C, 110, 501, F::Ack, b"XYZ"));
    t.feed(seg(C, 113, 501, F::Ack, b"-"));
    assert_eq!(t.stats.overlap_conflicts, 1);
    assert_eq!(t.stream(C), b"abcdefghiXYZ-");
}

#[test]
fn overlapping_segments_keep_held_bytes() {
    let mut t = h();
    t.handshake(0, 500);
    t.feed(seg(C, 1, 501, F::Ack, b"0123"));
    // Held: [10,14) and [16,18). A segment [8,20) overlaps both, differs in [12,14).
    t.feed(seg(C, 11, 501, F::Ack, b"ABCD"));
    t.feed(seg(C, 17, 501, F::Ack, b"GH"));
    t.feed(seg(C, 9, 501, F::Ack, b"89ABxxEFGHIJ"));
    assert_eq!(t.stats.overlap_conflicts, 2);
    // An in-order segment that runs into held data: the held copy wins there (4 bytes differ).
    t.feed(seg(C, 5, 501, F::Ack, b"4567zzzz"));
    assert_eq!(t.stream(C), b"0123456789ABCDEFGHIJ");
    assert_eq!(t.stats.overlap_conflicts, 6);
    assert_eq!(t.stats.reassembly_gaps, 0);
}

#[test]
fn gap_is_skipped_at_fin() {
    let mut t = h();
    t.handshake(100, 500);
    t.feed(seg(C, 101, 501, F::Ack, b"aaa"));
    // 104..107 lost; FIN after 110.
    t.feed(seg(C, 107, 501, F::Ack, b"ccc"));
    t.feed(seg(C, 110, 501, F::Fin, b""));
    assert_eq!(
        t.events(),
        vec![
            Ev::Data(C, b"aaa".to_vec()),
            Ev::Gap(C, 3),
            Ev::Data(C, b"ccc".to_vec()),
            Ev::Close(C, false),
        ]
    );
    assert_eq!((t.stats.reassembly_gaps, t.stats.gap_bytes), (1, 3));
    // The last data before a FIN was lost: reported as a gap up to the FIN.
    t.feed(seg(S, 501, 111, F::Ack, b"xy"));
    t.feed(seg(S, 505, 111, F::Fin, b""));
    assert_eq!(t.closed.len(), 1);
    let ev = t.events();
    assert_eq!(
        &ev[4..],
        &[
            Ev::Data(S, b"xy".to_vec()),
            Ev::Gap(S, 2),
            Ev::Close(S, false)
        ]
    );
}

#[test]
fn full_window_skips_the_hole_and_drops_what_cannot_fit() {
    let mut t = Harness::new(Limits {
        handshake_window: 10,
        ..Limits::default()
    });
    t.handshake(100, 500);
    t.feed(seg(C, 101, 501, F::Ack, b"aaa"));
    t.feed(seg(C, 107, 501, F::Ack, b"ccccccc")); // held: 7 bytes, hole 104..107
    assert_eq!(t.stats.reassembly_gaps, 0);
    t.feed(seg(C, 116, 501, F::Ack, b"eeeeeee")); // 14 > 10: the hole is skipped
    assert_eq!(
        t.events(),
        vec![
            Ev::Data(C, b"aaa".to_vec()),
            Ev::Gap(C, 3),
            Ev::Data(C, b"ccccccc".to_vec()),
        ]
    );
    assert_eq!(t.stats.window_dropped_bytes, 0);
    // [114,116) still missing; the 7 new bytes are held. A 15-byte segment further on
    // cannot fit even in an empty buffer: 5 bytes dropped.
    t.feed(seg(C, 200, 501, F::Ack, &[b'z'; 15]));
    assert_eq!(t.stats.window_dropped_bytes, 5);
    assert_eq!(t.stats.reassembly_gaps, 2);
    assert_eq!(t.stream(C), [&b"aaaccccccc"[..], b"eeeeeee"].concat());
    t.feed(seg(C, 215, 501, F::Fin, b""));
    // Held 10 z's delivered after a gap; the 5 dropped bytes become the gap before the FIN.
    let ev = t.events();
    assert_eq!(
        &ev[ev.len() - 4..],
        &[
            Ev::Gap(C, 200 - 123),
            Ev::Data(C, vec![b'z'; 10]),
            Ev::Gap(C, 5),
            Ev::Close(C, false)
        ]
    );
}

#[test]
fn sequence_numbers_wrap_around() {
    let mut t = h();
    let isn = u32::MAX - 2; // data starts at 2^32 - 2
    t.handshake(isn, 7);
    t.feed(seg(C, u32::MAX - 1, 8, F::Ack, b"abcd")); // crosses the wrap: next seq is 2
    t.feed(seg(C, 6, 8, F::Ack, b"ijkl")); // out of order, after the wrap
    t.feed(seg(C, 2, 8, F::Ack, b"efgh"));
    t.feed(seg(C, u32::MAX, 8, F::Ack, b"bc")); // old retransmission from before the wrap
    assert_eq!(t.stream(C), b"abcdefghijkl");
    assert_eq!(t.stats.reassembly_gaps, 0);
    // Server ISN near the top too, with the SYN consuming the last number.
    let mut t = h();
    t.handshake(1, u32::MAX);
    t.feed(seg(S, 0, 2, F::Ack, b"xyz"));
    assert_eq!(t.stream(S), b"xyz");
}

#[test]
fn mid_stream_pickup_orients_by_server_port() {
    let mut t = h();
    // No SYN seen; first segments are pure ACKs: they open nothing.
    assert!(!t.feed(seg(S, 9000, 5000, F::Ack, b"")));
    assert_eq!(t.stats.segments_ignored, 1);
    // First server payload: the sender is the server (source port 443).
    assert!(t.feed(seg(S, 9000, 5000, F::Ack, b"\x16\x03\x03")));
    assert_eq!(t.factory.opened[0].0, S);
    assert!(t.feed(seg(C, 5000, 9003, F::Ack, b"hi")));
    assert!(t.feed(seg(S, 9003, 5002, F::Ack, b"!")));
    assert_eq!(t.stream(S), b"\x16\x03\x03!");
    assert_eq!(t.stream(C), b"hi");
    // A refused flow counts its segments as ignored.
    let mut t = h();
    t.factory.refuse = true;
    assert!(!t.feed(seg(C, 1, 1, F::Ack, b"x")));
    assert_eq!((t.stats.segments_ignored, t.stats.flows_opened), (1, 0));
    // Any-port mode: neither port is a server port; the lower port is guessed as the server.
    let mut t = h();
    t.factory.server_ports.clear();
    t.feed(seg(C, 1, 1, F::Ack, b"x"));
    assert_eq!(t.factory.opened[0].0, C);
    assert_eq!(t.factory.opened[0].1.server.port(), 443);
}

#[test]
fn syn_ack_orients_the_flow() {
    let mut t = h();
    t.factory.server_ports.clear();
    t.feed(seg(S, 500, 101, F::SynAck, b""));
    assert_eq!(t.factory.opened[0].0, S);
    t.feed(seg(S, 501, 101, F::Ack, b"srv"));
    assert_eq!(t.stream(S), b"srv");
}

#[test]
fn rst_closes_immediately_after_flushing() {
    let mut t = h();
    t.handshake(100, 500);
    t.feed(seg(C, 101, 501, F::Ack, b"aa"));
    t.feed(seg(C, 105, 501, F::Ack, b"cc"));
    assert!(!t.feed(seg(S, 501, 0, F::Rst, b"")));
    assert_eq!(t.closed[0].reason, CloseReason::Rst(S));
    assert_eq!(
        t.events(),
        vec![
            Ev::Data(C, b"aa".to_vec()),
            Ev::Gap(C, 2),
            Ev::Data(C, b"cc".to_vec()),
            Ev::Close(S, true),
        ]
    );
    assert!(t.table.is_empty());
    // A stray RST opens nothing.
    assert!(!t.feed(seg(C, 1, 0, F::Rst, b"")));
    assert!(t.table.is_empty());
}

#[test]
fn full_table_evicts_least_recently_active() {
    let mut t = Harness::new(Limits {
        max_flows: 2,
        ..Limits::default()
    });
    let open = |t: &mut Harness, port: u16| {
        t.feed(seg_from(C, port, 1, 0, F::Syn, b"", 1));
    };
    open(&mut t, 1001);
    open(&mut t, 1002);
    // Flow 1001 becomes the most recently active.
    t.feed(seg_from(C, 1001, 2, 0, F::Ack, b"x", 2));
    open(&mut t, 1003);
    assert_eq!(t.table.len(), 2);
    assert_eq!(t.stats.flows_evicted, 1);
    assert_eq!(t.closed.len(), 1);
    assert_eq!(t.closed[0].reason, CloseReason::Evicted);
    assert_eq!(t.closed[0].endpoints.client.port(), 1002);
}

#[test]
fn idle_flows_expire_in_activity_order() {
    let mut t = Harness::new(Limits {
        idle_timeout_us: 10_000_000,
        ..Limits::default()
    });
    t.feed(seg_from(C, 1001, 1, 0, F::Syn, b"", 0));
    t.feed(seg_from(C, 1002, 1, 0, F::Syn, b"", 5));
    // 1003 sent a FIN at t=6 and then went quiet.
    t.feed(seg_from(C, 1003, 1, 0, F::Syn, b"", 6));
    t.feed(seg_from(C, 1003, 2, 0, F::Fin, b"", 6));
    let at = |s: i64| Timestamp::from_micros(s * 1_000_000);
    t.table
        .expire(at(10), 0, usize::MAX, &mut t.stats, &mut t.closed);
    assert!(t.closed.is_empty());
    t.table
        .expire(at(12), 0, usize::MAX, &mut t.stats, &mut t.closed);
    assert_eq!(t.closed.len(), 1);
    assert_eq!(t.closed[0].endpoints.client.port(), 1001);
    assert_eq!(t.closed[0].reason, CloseReason::IdleTimeout);
    t.table
        .expire(at(17), 0, usize::MAX, &mut t.stats, &mut t.closed);
    assert_eq!(t.closed.len(), 3);
    assert_eq!(t.closed[2].reason, CloseReason::Fin);
    assert_eq!(t.stats.flows_timed_out, 2);
    assert!(t.table.is_empty());
}

/// Packet times that go back: an idle flow behind a live one in the activity order closes when
/// the scan is told how far times went back, not only when the live one goes (what a parallel
/// run's tables, holding other neighbours, must agree on).
#[test]
fn idle_flows_behind_live_ones_expire_when_times_went_back() {
    let limits = Limits {
        idle_timeout_us: 10_000_000,
        max_flows: 100, // one shard: one activity order
        ..Limits::default()
    };
    let at = |s: i64| Timestamp::from_micros(s * 1_000_000);
    for (disorder_us, closed) in [(0, 0), (7_000_000, 1)] {
        let mut t = Harness::new(limits.clone());
        t.feed(seg_from(C, 1001, 1, 0, F::Syn, b"", 8));
        t.feed(seg_from(C, 1002, 1, 0, F::Syn, b"", 1)); // 7 s back
        let n = t
            .table
            .expire(at(12), disorder_us, usize::MAX, &mut t.stats, &mut t.closed);
        assert_eq!(n, closed, "disorder {disorder_us}");
        if closed == 1 {
            assert_eq!(t.closed[0].endpoints.client.port(), 1002);
            assert_eq!(t.table.len(), 1);
        }
    }
}

#[test]
fn drain_closes_everything_with_capture_end() {
    let mut t = h();
    t.handshake(100, 500);
    t.feed(seg(C, 105, 501, F::Ack, b"late"));
    t.table.drain(usize::MAX, &mut t.stats, &mut t.closed);
    assert!(t.table.is_empty());
    assert_eq!(t.closed[0].reason, CloseReason::CaptureEnd);
    assert_eq!(
        t.events(),
        vec![Ev::Gap(C, 4), Ev::Data(C, b"late".to_vec())]
    );
}

#[test]
fn wants_data_false_skips_reassembly_but_tracks_fin() {
    let mut t = h();
    t.factory.budget = Some(1);
    t.handshake(100, 500);
    t.feed(seg(C, 105, 501, F::Ack, b"held")); // out of order, held
    t.feed(seg(C, 101, 501, F::Ack, b"1st!")); // delivered; handler then wants no more
    t.feed(seg(C, 109, 501, F::Ack, b"bulk"));
    t.feed(seg(S, 501, 113, F::Ack, b"more bulk"));
    t.feed(seg(S, 600, 113, F::Ack, b"even with a hole"));
    t.feed(seg(S, 700, 113, F::Fin, b""));
    assert!(!t.feed(seg(C, 113, 701, F::Fin, b"")));
    assert_eq!(
        t.events(),
        vec![
            Ev::Data(C, b"1st!".to_vec()),
            Ev::Close(S, false),
            Ev::Close(C, false)
        ]
    );
    assert_eq!(t.stats.reassembly_gaps, 0);
    assert_eq!(t.closed[0].reason, CloseReason::Fin);
}

#[test]
fn port_reuse_starts_a_new_flow() {
    let mut t = h();
    t.handshake(100, 500);
    t.feed(seg(C, 101, 501, F::Fin, b""));
    // A new SYN after a FIN: the old flow closes, a new one opens, even with the old ISN.
    t.feed(seg(C, 100, 0, F::Syn, b""));
    assert_eq!(t.stats.flows_opened, 2);
    assert_eq!(t.closed.len(), 1);
    assert_eq!(t.closed[0].reason, CloseReason::Fin);
    // A retransmitted SYN (same ISN) is the same flow.
    t.feed(seg(C, 100, 0, F::Syn, b""));
    assert_eq!(t.stats.flows_opened, 2);
    t.feed(seg(C, 101, 0, F::Ack, b"new"));
    assert_eq!(t.table.len(), 1);
}

#[test]
fn ack_beyond_a_hole_skips_it_early() {
    let mut t = h();
    t.handshake(100, 500);
    t.feed(seg(C, 101, 501, F::Ack, b"aaa"));
    t.feed(seg(C, 107, 501, F::Ack, b"ccc"));
    // The server ACKs 104: nothing is known missing yet.
    t.feed(seg(S, 501, 104, F::Ack, b""));
    assert_eq!(t.stats.reassembly_gaps, 0);
    // The server ACKs 110: it received 104..107, which the capture lost.
    t.feed(seg(S, 501, 110, F::Ack, b""));
    assert_eq!(
        t.events(),
        vec![
            Ev::Data(C, b"aaa".to_vec()),
            Ev::Gap(C, 3),
            Ev::Data(C, b"ccc".to_vec()),
        ]
    );
}

mod corpus {
    use std::path::Path;

    use super::*;
    use crate::capture::file::FileSource;
    use crate::decode::decode;

    const PCAPS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/validation/pcaps");

    /// Every flow of a capture (any port), closed at capture end.
    fn run(name: &str) -> (Vec<ClosedFlow<Rec>>, Stats) {
        let mut src = FileSource::open(Path::new(PCAPS).join(name)).unwrap();
        let mut t = h();
        t.factory.server_ports = vec![443, 4433, 8080, 9090, 10000, 389, 3306, 4343, 43, 80];
        while let Some(p) = src.next_packet().unwrap() {
            if let Ok(s) = decode(&p.frame()) {
                let now = s.ts;
                t.feed(s);
                t.table
                    .expire(now, 0, usize::MAX, &mut t.stats, &mut t.closed);
            }
        }
        t.table.drain(usize::MAX, &mut t.stats, &mut t.closed);
        (t.closed, t.stats)
    }

    #[test]
    fn out_of_order_server_flight_is_reassembled() {
        // The server's first segment arrives after the next ones and is retransmitted later.
        let (flows, stats) = run("sv-tls-fingerprint-alert.pcap");
        assert_eq!(flows.len(), 1);
        let f = &flows[0];
        assert_eq!(f.endpoints.server.port(), 443);
        assert_eq!(f.reason, CloseReason::Rst(Side::Client));
        let server = f.handler.stream(Side::Server);
        let client = f.handler.stream(Side::Client);
        assert_eq!((client.len(), server.len()), (566, 4009));
        // ServerHello record, then the Certificate handshake message inside it.
        assert_eq!(&server[..3], b"\x16\x03\x03");
        assert_eq!(server[5], 2);
        assert_eq!(&client[..3], b"\x16\x03\x01");
        assert_eq!(stats.reassembly_gaps, 0);
    }

    #[test]
    fn lossy_capture_streams_start_with_tls_records() {
        // 40 TLS sessions with retransmitted, out-of-order and lost segments.
        let (flows, _) = run("sv-tls-subjectaltname.pcap");
        let tls: Vec<_> = flows
            .iter()
            .filter(|f| {
                // Flows picked up mid-stream from data sent after a RST have no client bytes.
                let has = |side| !f.handler.stream(side).is_empty();
                f.endpoints.server.port() == 443 && has(Side::Server) && has(Side::Client)
            })
            .collect();
        assert!(tls.len() >= 40, "{}", tls.len());
        for f in tls {
            let (c, s) = (
                f.handler.stream(Side::Client),
                f.handler.stream(Side::Server),
            );
            assert_eq!(c.first(), Some(&0x16), "{:?}", f.endpoints);
            assert_eq!(s.first(), Some(&0x16), "{:?}", f.endpoints);
        }
    }

    #[test]
    fn every_capture_reassembles_without_panics() {
        let mut names: Vec<_> = std::fs::read_dir(PCAPS)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        for name in names {
            let (flows, stats) = run(&name);
            assert!(stats.window_dropped_bytes == 0, "{name}");
            eprintln!(
                "{name}: flows {} gaps {} gap_bytes {} conflicts {} dropped {} ignored {}",
                flows.len(),
                stats.reassembly_gaps,
                stats.gap_bytes,
                stats.overlap_conflicts,
                stats.window_dropped_bytes,
                stats.segments_ignored
            );
        }
    }
}

#[test]
fn shards_hold_both_directions_and_share_max_flows() {
    assert_eq!(shard_count(1), 1);
    assert_eq!(shard_count(2047), 1);
    assert_eq!(shard_count(4096), 4);
    assert_eq!(shard_count(100_000), MAX_SHARDS);
    let t = Harness::new(Limits {
        max_flows: 5000,
        ..Limits::default()
    });
    assert_eq!(t.table.shards(), 4);
    assert_eq!(
        t.table.shards.iter().map(|s| s.max_flows).sum::<usize>(),
        5000
    );
    let mut seen = std::collections::HashSet::new();
    for port in 1000..1400 {
        let out = seg_from(C, port, 1, 0, F::Ack, b"x", 1);
        let back = seg_from(S, port, 1, 0, F::Ack, b"x", 1);
        let shard = shard_of(&out, 64);
        assert_eq!(shard, shard_of(&back, 64), "port {port}");
        seen.insert(shard);
    }
    // The mix spreads connections that differ only in a port over the shards.
    assert!(seen.len() > 48, "{} of 64 shards used", seen.len());
}

#[test]
fn flow_points_are_the_same_both_ways_and_spread_apart_from_the_shards() {
    // How many connections fall in each sixteenth of 0..2³², and in which shards.
    let mut sixteenths = [0u32; 16];
    let mut shards = vec![std::collections::HashSet::new(); 16];
    for port in 1000..5000 {
        let out = seg_from(C, port, 1, 0, F::Ack, b"x", 1);
        let back = seg_from(S, port, 1, 0, F::Ack, b"x", 1);
        let point = flow_point(&out);
        assert_eq!(point, flow_point(&back), "port {port}");
        let i = (point >> 28) as usize;
        sixteenths[i] += 1;
        shards[i].insert(shard_of(&out, 64));
    }
    // 250 connections per sixteenth on average: each gets some, none a crowd.
    assert!(
        sixteenths.iter().all(|&n| (150..350).contains(&n)),
        "{sixteenths:?}"
    );
    // The connections of any share of the points (a parallel run's pipeline) use every shard.
    assert!(
        shards.iter().all(|s| s.len() > 56),
        "{:?}",
        shards.iter().map(|s| s.len()).collect::<Vec<_>>()
    );
}

#[test]
fn a_full_shard_evicts_its_own_least_recently_active_flow() {
    let mut t = Harness::new(Limits {
        max_flows: 4096,
        ..Limits::default()
    });
    let shard = |port: u16| shard_of(&seg_from(C, port, 1, 0, F::Syn, b"", 1), 4);
    let target = shard(2000);
    let same: Vec<u16> = (2000..60000).filter(|&p| shard(p) == target).collect();
    let other = (2000..60000).find(|&p| shard(p) != target).unwrap();
    t.feed(seg_from(C, other, 1, 0, F::Syn, b"", 1));
    for &port in &same[..1024] {
        t.feed(seg_from(C, port, 1, 0, F::Syn, b"", 1));
    }
    assert_eq!(t.stats.flows_evicted, 0);
    // The shard holds its 1024: one more evicts its oldest, not the older flow of another shard.
    t.feed(seg_from(C, same[1024], 1, 0, F::Syn, b"", 2));
    assert_eq!(t.stats.flows_evicted, 1);
    assert_eq!(t.closed[0].endpoints.client.port(), same[0]);
    assert_eq!(t.table.len(), 1025);
}

#[test]
fn flows_closed_together_leave_in_the_order_of_their_last_packets() {
    let mut t = Harness::new(Limits {
        idle_timeout_us: 10_000_000,
        ..Limits::default()
    });
    assert_eq!(t.table.shards(), MAX_SHARDS);
    let ports: Vec<u16> = (3000..3200).collect();
    for &p in &ports {
        t.feed(seg_from(C, p, 1, 0, F::Syn, b"", 0));
    }
    // Touched again in another order (a stride through the ports), the first half at t=5.
    let order: Vec<u16> = (0..ports.len())
        .map(|i| ports[(i * 37) % ports.len()])
        .collect();
    for (i, &p) in order.iter().enumerate() {
        let ts = if i < 100 { 5 } else { 20 };
        t.feed(seg_from(C, p, 2, 0, F::Ack, b"x", ts));
    }
    let at = |s: i64| Timestamp::from_micros(s * 1_000_000);
    // The first half expires, in batches.
    let mut batches = Vec::new();
    loop {
        let n = t.table.expire(at(16), 0, 30, &mut t.stats, &mut t.closed);
        batches.push(n);
        if n < 30 {
            break;
        }
    }
    assert_eq!(batches, vec![30, 30, 30, 10]);
    let ports_of = |c: &[ClosedFlow<Rec>]| -> Vec<u16> {
        c.iter().map(|f| f.endpoints.client.port()).collect()
    };
    assert_eq!(ports_of(&t.closed), order[..100]);
    t.closed.clear();
    // Capture end: the rest, in batches too.
    while !t.table.is_empty() {
        t.table.drain(64, &mut t.stats, &mut t.closed);
    }
    assert_eq!(ports_of(&t.closed), order[100..]);
    assert_eq!(t.table.heap_bytes(), 0);
}

#[test]
fn beyond_the_memory_budget_flows_worth_least_are_shed_first() {
    // Flows from four client ports; 4004 then receives 20 KB it must hold out of order.
    let scenario = |flow_memory: usize| {
        let mut t = Harness::new(Limits {
            flow_memory,
            ..Limits::default()
        });
        t.factory.worth = vec![
            (4001, Worth::InProgress),
            (4002, Worth::Nothing),
            (4003, Worth::Reported),
        ];
        for port in [4001, 4002, 4003, 4004] {
            t.feed(seg_from(C, port, 1, 0, F::Syn, b"", 1));
        }
        let before = t.table.heap_bytes();
        t.feed(seg_from(C, 4004, 1000, 0, F::Ack, &[7; 20_000], 2));
        (t, before)
    };
    let (unbounded, before) = scenario(usize::MAX);
    let base = before / 4;
    let full = unbounded.table.heap_bytes();
    assert!(full >= before + 20_000, "held bytes are charged: {full}");
    assert_eq!(unbounded.stats.flows_shed, 0);
    // The four flows cost `full`; a budget one and a half flows short of it sheds two of them:
    // the one that showed nothing, then the one already reported.
    let (t, _) = scenario(full - base - base / 2);
    assert_eq!(t.stats.flows_shed, 2);
    let shed: Vec<_> = t
        .closed
        .iter()
        .map(|f| (f.endpoints.client.port(), f.reason))
        .collect();
    assert_eq!(
        shed,
        vec![(4002, CloseReason::Evicted), (4003, CloseReason::Evicted)]
    );
    assert_eq!(t.table.heap_bytes(), full - 2 * base);
    // The flows it looked at were not all in the shard of the flow that grew.
    let shard = |port: u16| shard_of(&seg_from(C, port, 1, 0, F::Syn, b"", 1), MAX_SHARDS);
    assert!([4001, 4002, 4003].iter().any(|&p| shard(p) != shard(4004)));
    // A budget the four flows just fit, but not the growing one's held bytes: every other flow
    // is shed, in the order of their worth, never the one that grew.
    let (mut t, _) = scenario(before);
    let shed: Vec<_> = t.closed.iter().map(|f| f.endpoints.client.port()).collect();
    assert_eq!(shed, vec![4002, 4003, 4001]);
    assert_eq!(t.stats.flows_shed, 3);
    assert_eq!(t.table.len(), 1);
    // Its hole filled, the held bytes are delivered; at capture end every charge is returned.
    t.feed(seg_from(C, 4004, 2, 0, F::Ack, &[1; 998], 3));
    let client = SocketAddr::new(IpAddr::V4(CLIENT.0), 4004);
    let server = SocketAddr::new(IpAddr::V4(SERVER.0), SERVER.1);
    let got = t.table.handler_mut(client, server).unwrap().stream(C);
    assert_eq!(got.len(), 20_998);
    t.table.drain(usize::MAX, &mut t.stats, &mut t.closed);
    assert_eq!(t.table.heap_bytes(), 0);
}
