//! The eBPF capture source, for real (run as root on a kernel with BPF, as CI does): network
//! namespaces joined by a veth pair, real TLS peers (Go's crypto/tls, the OpenSSL CLI, rustls) on
//! either side, and trustwatch's sources attached to the server's end.
//!
//! - The eBPF source (ring and perf buffers) and libpcap watch the same traffic at the same time,
//!   each feeding its own pipeline: the connection records are identical (outcome, version,
//!   chains, alerts, CA key ids; timestamps aside) for IPv4, IPv6, VLAN and QinQ, and so are the
//!   detector's events in the incident (CloudCore restarting onto another CA).
//! - Bulk: 1 GiB after a handshake leaves at most the budget per direction in the kernel's
//!   copy, and the record is still right; with a small budget and no feedback exactly the budget
//!   is copied.
//! - Nothing is changed or lost: every byte arrives (hashes), and a clsact filter that was there
//!   before keeps counting every packet, with TCX and with clsact attachment; ours goes away on
//!   detach, theirs stays.
//! - A second instance does not disturb the first; a panic or SIGTERM detaches.
//! - Without the capabilities `auto` falls back to libpcap saying why, `ebpf` exits 2.
//! - Every load-time configuration passes the verifier with at least half its instruction limit
//!   to spare.

use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use trustwatch::capture::ebpf::{AttachMode, BufferKind, EbpfOptions, EbpfSource, attach};
use trustwatch::capture::pcap::{PcapOptions, PcapSource, bpf_filter};
use trustwatch::capture::running::{self, Backoff, Running};
use trustwatch::capture::{DropReason, FlowFeedback, Packet, Source, SourceCounters, StopSignal};
use trustwatch::config::{Limits, Services};
use trustwatch::detect::{DetectConfig, Detector, Event};
use trustwatch::export::json::ConnectionWriter;
use trustwatch::handshake::{Connection, Outcome};
use trustwatch::pipeline::Pipeline;
use trustwatch::trust::TrustedReference;
use trustwatch_testkit::netns::{Netns, VethPair};
use trustwatch_testkit::peers::{
    self, ClientOpts, PeerResult, TlsVersion, bulk, go, openssl, rustls_peer,
};
use trustwatch_testkit::pki::{Ca, Leaf, LeafSpec, Pki};

const BIN: &str = env!("CARGO_BIN_EXE_trustwatch");

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Which source a tap runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Pcap,
    Ebpf(BufferKind),
    /// The ring buffer, every header read through the program's copy path (the one for headers
    /// outside the skb's linear data).
    EbpfCopyingHeaders,
}

/// One source on its capture thread, feeding its own pipeline live (the eBPF source hears the
/// pipeline's decisions, as in `trustwatch live`).
struct Tap {
    kind: Kind,
    counters: Arc<SourceCounters>,
    running: Running,
    pipeline: JoinHandle<(Vec<Connection>, Vec<Packet>)>,
}

/// Taps on one interface, stopped together.
struct Taps {
    stop: StopSignal,
    taps: Vec<Tap>,
}

/// What a tap saw.
struct Seen {
    kind: Kind,
    conns: Vec<Connection>,
    packets: Vec<Packet>,
    counters: Arc<SourceCounters>,
}

impl Taps {
    /// Opens the sources inside `ns` on `iface` (their threads stay in the namespace).
    fn start(
        ns: &Netns,
        iface: &str,
        kinds: &[Kind],
        services: &Services,
        limits: &Limits,
        ebpf: &EbpfOptions,
        feedback: bool,
    ) -> Result<Taps> {
        let stop = StopSignal::new();
        let taps = ns.run(|| -> Result<Vec<Tap>> {
            let mut taps = Vec::new();
            for &kind in kinds {
                let source: Box<dyn Source> = match kind {
                    // A large socket buffer: the comparison needs libpcap to lose nothing
                    // either, also when the machine is busy.
                    Kind::Pcap => Box::new(PcapSource::open(
                        iface,
                        &bpf_filter(services),
                        &PcapOptions {
                            buffer_size: 64 << 20,
                            ..PcapOptions::default()
                        },
                    )?),
                    Kind::Ebpf(_) | Kind::EbpfCopyingHeaders => {
                        let opts = EbpfOptions {
                            buffer: match kind {
                                Kind::Ebpf(buffer) => buffer,
                                _ => BufferKind::Ring,
                            },
                            budget: limits.handshake_window,
                            copy_headers: kind == Kind::EbpfCopyingHeaders,
                            ..ebpf.clone()
                        };
                        Box::new(EbpfSource::open(iface, services, &opts)?)
                    }
                };
                let fb = if feedback { source.feedback() } else { None };
                let (tx, rx) = sync_channel(1 << 20);
                let running = running::spawn(source, tx, stop.clone(), Backoff::default())?;
                let pipeline = pipeline_thread(rx, services.clone(), limits.clone(), fb);
                taps.push(Tap {
                    kind,
                    counters: running.counters.clone(),
                    running,
                    pipeline,
                });
            }
            Ok(taps)
        })??;
        Ok(Taps { stop, taps })
    }

    /// Lets the last packets through, stops the sources (detaching eBPF) and collects.
    fn finish(self) -> Vec<Seen> {
        std::thread::sleep(Duration::from_millis(400));
        self.stop.stop();
        let mut out = Vec::new();
        for t in self.taps {
            t.running.join();
            let (conns, packets) = t.pipeline.join().expect("pipeline thread");
            out.push(Seen {
                kind: t.kind,
                conns,
                packets,
                counters: t.counters,
            });
        }
        out
    }
}

fn pipeline_thread(
    rx: Receiver<Packet>,
    services: Services,
    limits: Limits,
    feedback: Option<Arc<dyn FlowFeedback>>,
) -> JoinHandle<(Vec<Connection>, Vec<Packet>)> {
    std::thread::spawn(move || {
        let mut p = Pipeline::new(services, limits);
        let mut conns = Vec::new();
        let mut packets = Vec::new();
        for pkt in rx {
            let mut new = Vec::new();
            p.packet(&pkt, &mut |c| new.push(c));
            if let Some(f) = &feedback {
                for c in &new {
                    f.decided(c.client, c.server);
                }
            }
            conns.extend(new);
            packets.push(pkt);
        }
        p.finish(&mut |c| conns.push(c));
        (conns, packets)
    })
}

/// Keys whose values are times (they differ between sources by microseconds), or texts that
/// repeat them.
const TIME_KEYS: [&str; 9] = [
    "@timestamp",
    "start",
    "end",
    "duration",
    "at",
    "first_failure",
    "detection_latency_us",
    "detection_time",
    "message",
];

/// `s` with every RFC 3339 time (`2026-12-02T05:19:45.901707Z`) replaced by `T`.
fn without_times(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let is_time = b.len() - i >= 27
            && b[i + 4] == b'-'
            && b[i + 10] == b'T'
            && b[i + 19] == b'.'
            && b[i + 26] == b'Z'
            && b[i..i + 4].iter().all(u8::is_ascii_digit);
        if is_time {
            out.push('T');
            i += 27;
        } else {
            let ch = s[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

fn strip_times(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for k in TIME_KEYS {
                m.remove(k);
            }
            m.values_mut().for_each(strip_times);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_times),
        Value::String(t) => *t = without_first_close(&without_times(t)),
        _ => {}
    }
}

/// `s` without which close packet came first: when a client's FIN and the server's RST cross on
/// the wire, a packet socket and a TC hook (ingress before the stack, egress after it) can see
/// them in either order, as two libpcap taps on the two ends of the veth would.
fn without_first_close(s: &str) -> String {
    ["FIN", "RST"]
        .iter()
        .flat_map(|f| ["client", "server"].map(|side| format!("({f} from {side})")))
        .fold(s.to_string(), |s, close| s.replace(&close, "(close)"))
}

/// The records as JSON without times, sorted (sources may finish connections in another order).
fn comparable(conns: &[Connection]) -> Vec<String> {
    let mut w = ConnectionWriter::default();
    let mut out: Vec<String> = conns
        .iter()
        .map(|c| {
            let mut buf = Vec::new();
            w.write(&mut buf, c, None);
            let mut v: Value = serde_json::from_slice(&buf).expect("parse");
            strip_times(&mut v);
            v.to_string()
        })
        .collect();
    out.sort();
    out
}

fn events_of(conns: &[Connection], services: &Services) -> Vec<Event> {
    let cfg = DetectConfig {
        services: services.clone(),
        ..DetectConfig::default()
    };
    let mut d = Detector::new(cfg, TrustedReference::default());
    let mut sorted: Vec<&Connection> = conns.iter().collect();
    sorted.sort_by_key(|c| c.end);
    let mut events = Vec::new();
    for c in &sorted {
        d.observe(c, &mut events);
    }
    if let Some(last) = sorted.last() {
        d.tick(last.end, &mut events);
    }
    events
}

fn comparable_events(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            let mut v = serde_json::to_value(e).expect("event json");
            strip_times(&mut v);
            v.to_string()
        })
        .collect()
}

/// The records of two taps are the same, and so are the detector's events on them.
fn assert_same(reference: &Seen, other: &Seen, services: &Services) {
    let (a, b) = (comparable(&reference.conns), comparable(&other.conns));
    if a != b {
        for (x, y) in a.iter().zip(&b) {
            if x != y {
                eprintln!("{:?}: {x}\n{:?}: {y}", reference.kind, other.kind);
            }
        }
        panic!(
            "{:?} and {:?} disagree ({} vs {} records)",
            reference.kind,
            other.kind,
            a.len(),
            b.len()
        );
    }
    let (ea, eb) = (
        comparable_events(&events_of(&reference.conns, services)),
        comparable_events(&events_of(&other.conns, services)),
    );
    assert_eq!(
        ea, eb,
        "{:?} vs {:?}: detector events",
        reference.kind, other.kind
    );
}

fn outcome_count(conns: &[Connection], o: Outcome) -> usize {
    conns.iter().filter(|c| c.outcome == o).count()
}

fn ebpf_opts() -> EbpfOptions {
    EbpfOptions::default()
}

/// The kernel copied every record the source handed on; nothing was lost anywhere.
fn assert_nothing_lost(s: &Seen) {
    let c = &s.counters;
    for r in DropReason::ALL {
        assert_eq!(c.dropped(r), 0, "{:?}: {r:?} drops", s.kind);
    }
    if matches!(s.kind, Kind::Ebpf(_) | Kind::EbpfCopyingHeaders) {
        assert_eq!(
            c.kernel.copied.load(std::sync::atomic::Ordering::Relaxed),
            c.packets(),
            "{:?}: records copied by the kernel vs packets handed on",
            s.kind
        );
    }
}

fn load(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(std::sync::atomic::Ordering::Relaxed)
}

/// CloudCore-like server certificate valid for every server address of `pair`.
fn server_leaf(pki: &Pki, ca: &Ca, ips: &[IpAddr]) -> Leaf {
    let spec = LeafSpec {
        sans: ips.iter().map(ToString::to_string).collect(),
        ..LeafSpec::cloudcore()
    };
    pki.leaf(ca, &spec).expect("server leaf")
}

fn ports4() -> Result<[u16; 4]> {
    Ok([
        trustwatch_testkit::free_port()?,
        trustwatch_testkit::free_port()?,
        trustwatch_testkit::free_port()?,
        trustwatch_testkit::free_port()?,
    ])
}

fn services_of(ports: &[u16]) -> Services {
    let names = ["cloudhub", "certsvc", "stream", "tunnel"];
    let list: Vec<String> = ports
        .iter()
        .zip(names)
        .map(|(p, n)| format!("{p}={n}"))
        .collect();
    list.join(",").parse().expect("ports")
}

/// Go (mTLS 1.3: accepted, rejected by the client, rejected by the server), OpenSSL and rustls
/// (mTLS 1.2), rustls over IPv6 (1.3): libpcap, the eBPF ring source and the eBPF perf source
/// give the same records and the same detector events. Then VLAN (802.1Q) and QinQ (802.1ad
/// outer, 802.1Q inner) copies of a connection's frames arrive with the outer tag in the skb
/// metadata: again the same records, with the outer VLAN id.
#[test]
fn records_match_libpcap() -> Result<()> {
    let pair = VethPair::new(11)?;
    let edges = pair.add_client_addresses(11, 4)?;
    let pki = Pki::new()?;
    let (ca_a, ca_b) = (pki.kubeedge_ca()?, pki.kubeedge_ca()?);
    let leaf = server_leaf(&pki, &ca_a, &[pair.server.ip(false), pair.server.ip(true)]);
    let edge_a: Vec<Leaf> = (0..4)
        .map(|i| pki.client_leaf(&ca_a, &format!("node-{i}")))
        .collect::<std::result::Result<_, _>>()?;
    let edge_b = pki.client_leaf(&ca_b, "node-b")?;
    let ports = ports4()?;
    let services = services_of(&ports);
    let limits = Limits::default();
    let kinds = [
        Kind::Pcap,
        Kind::Ebpf(BufferKind::Ring),
        Kind::Ebpf(BufferKind::Perf),
        Kind::EbpfCopyingHeaders,
    ];
    let start = |pair: &VethPair| {
        Taps::start(
            &pair.server_ns,
            &pair.server_if,
            &kinds,
            &services,
            &limits,
            &ebpf_opts(),
            true,
        )
    };
    let taps = start(&pair)?;

    let at = |ip: IpAddr, port: u16| SocketAddr::new(ip, port);
    let v4 = pair.server.ip(false);
    // Servers, in the server namespace (their threads and processes stay there).
    let (go_srv, ossl_srv, v6_srv, r12_srv) = pair.server_ns.run(|| -> Result<_> {
        let mut g = go::ServerOpts::new(at(v4, ports[0]), &leaf);
        g.client_ca = Some(ca_a.cert_path.clone());
        g.max_version = Some(TlsVersion::V13);
        g.accept = 4;
        let go_srv = go::server(g)?;
        let ossl_srv = openssl::server(openssl::ServerOpts {
            listen: at(v4, ports[1]),
            identity: &leaf,
            client_ca: Some(ca_a.cert_path.clone()),
            version: Some(TlsVersion::V12),
            accept: 1,
        })?;
        let rustls_on = |addr: SocketAddr, version: TlsVersion| {
            let mut r = rustls_peer::ServerOpts::new(&leaf);
            r.listen = addr;
            r.client_roots = Some(vec![ca_a.root.der.clone()]);
            r.version = Some(version);
            r.accept = 2;
            rustls_peer::server(r)
        };
        let v6_srv = rustls_on(at(pair.server.ip(true), ports[2]), TlsVersion::V13)?;
        let r12_srv = rustls_on(at(v4, ports[3]), TlsVersion::V12)?;
        Ok((go_srv, ossl_srv, v6_srv, r12_srv))
    })??;

    let results = pair.client_ns.run(|| -> Result<Vec<(&str, PeerResult)>> {
        let mut out = Vec::new();
        let go_to = |local: IpAddr, trust: &Ca, id: &Leaf| -> Result<PeerResult> {
            let o = ClientOpts::new(at(v4, ports[0]))
                .local_ip(local)
                .version(TlsVersion::V13);
            Ok(go::client(&o, &trust.cert_path, Some(id), None)?.remove(0))
        };
        out.push(("go ok", go_to(edges[0], &ca_a, &edge_a[0])?));
        out.push(("go ok", go_to(edges[1], &ca_a, &edge_a[1])?));
        out.push(("go client rejects", go_to(edges[2], &ca_b, &edge_a[2])?));
        out.push(("go server rejects", go_to(edges[3], &ca_a, &edge_b)?));
        let o = ClientOpts::new(at(v4, ports[1])).version(TlsVersion::V12);
        out.push((
            "openssl",
            openssl::client(&o, &ca_a.cert_path, Some(&edge_a[0]))?,
        ));
        let rustls =
            |o: &ClientOpts, id: &Leaf| peers::run_client(peers::Stack::Rustls, o, &ca_a, Some(id));
        let o = ClientOpts::new(at(pair.server.ip(true), ports[2]))
            .version(TlsVersion::V13)
            .attempts(2, Duration::from_millis(20));
        out.extend(
            rustls(&o, &edge_a[2])?
                .into_iter()
                .map(|r| ("rustls ipv6", r)),
        );
        let o = ClientOpts::new(at(v4, ports[3]))
            .version(TlsVersion::V12)
            .attempts(2, Duration::from_millis(20));
        out.extend(
            rustls(&o, &edge_a[3])?
                .into_iter()
                .map(|r| ("rustls 1.2", r)),
        );
        Ok(out)
    })??;
    let _ = go_srv.join_results(Duration::from_secs(5));
    let _ = ossl_srv.join(Duration::from_secs(5));
    let _ = v6_srv.join();
    let _ = r12_srv.join();
    let seen = taps.finish();

    // Ground truth from the peers.
    assert_eq!(results.len(), 9);
    for (name, r) in &results {
        assert_eq!(r.ok, !name.contains("rejects"), "{name}: {r:?}");
    }
    let pcap = &seen[0];
    for s in &seen {
        eprintln!(
            "{:?}: {} packets, {} bytes, {} records",
            s.kind,
            s.counters.packets(),
            s.counters.bytes(),
            s.conns.len()
        );
        assert_nothing_lost(s);
    }
    let conns = &pcap.conns;
    assert_eq!(conns.len(), 9, "{conns:#?}");
    assert_eq!(outcome_count(conns, Outcome::Established), 7);
    assert_eq!(outcome_count(conns, Outcome::RejectedByClient), 1);
    assert_eq!(outcome_count(conns, Outcome::RejectedByServer), 1);
    assert_eq!(conns.iter().filter(|c| c.client.is_ipv6()).count(), 2);
    for c in conns
        .iter()
        .filter(|c| c.server.port() == ports[1] || c.server.port() == ports[3])
    {
        assert_eq!(c.ca_key_id.as_deref(), Some(ca_a.key_id()), "{c:?}");
        assert_eq!(c.client_ca_key_id.as_deref(), Some(ca_a.key_id()), "{c:?}");
    }
    for s in &seen[1..] {
        assert_same(pcap, s, &services);
        // Fewer bytes than libpcap: no pure ACKs, nothing after a decision.
        assert!(s.counters.bytes() < pcap.counters.bytes(), "{:?}", s.kind);
        assert!(load(&s.counters.kernel.decided) >= 9, "{:?}", s.kind);
        // Copying every header: three reads (EtherType, IP, TCP) per watched packet at least.
        let k = &s.counters.kernel;
        if s.kind == Kind::EbpfCopyingHeaders {
            assert!(
                load(&k.header_copies) >= 3 * load(&k.matched),
                "{} header copies for {} watched packets",
                load(&k.header_copies),
                load(&k.matched)
            );
        }
    }

    // VLAN and QinQ: tagged copies of the first rustls 1.2 connection's frames as libpcap saw
    // them, sent from the client's end (GSO frames included: both ends take 64 KiB frames).
    let first = conns
        .iter()
        .filter(|c| c.server.port() == ports[3])
        .map(|c| c.client)
        .min()
        .ok_or("no rustls 1.2 connection")?;
    let frames: Vec<Vec<u8>> = pcap
        .packets
        .iter()
        .filter(|p| {
            trustwatch::decode::decode(&p.frame()).is_ok_and(|g| {
                SocketAddr::new(g.src, g.sport) == first || SocketAddr::new(g.dst, g.dport) == first
            })
        })
        .map(|p| p.data.to_vec())
        .collect();
    assert!(frames.len() >= 8, "{}", frames.len());
    pair.server_ns
        .ip(&["link", "set", &pair.server_if, "mtu", "65535"])?;
    pair.client_ns
        .ip(&["link", "set", &pair.client_if, "mtu", "65535"])?;
    for (tags, id) in [
        (vec![(0x8100u16, 100u16)], 100),
        (vec![(0x88a8, 200), (0x8100, 300)], 200),
    ] {
        let tagged: Vec<Vec<u8>> = frames
            .iter()
            .map(|f| {
                let mut v = f[..12].to_vec();
                for (tpid, vid) in &tags {
                    v.extend_from_slice(&tpid.to_be_bytes());
                    v.extend_from_slice(&vid.to_be_bytes());
                }
                v.extend_from_slice(&f[12..]);
                v
            })
            .collect();
        let taps = start(&pair)?;
        let client_if = pair.client_if.clone();
        pair.client_ns
            .run(move || trustwatch_testkit::netns::inject(&client_if, &tagged))??;
        let seen = taps.finish();
        for s in &seen {
            eprintln!(
                "VLAN {id}: {:?}: {} packets, {} records",
                s.kind,
                s.counters.packets(),
                s.conns.len()
            );
        }
        let pcap = &seen[0];
        assert_eq!(pcap.conns.len(), 1, "VLAN {id}: {:#?}", pcap.conns);
        let c = &pcap.conns[0];
        assert_eq!(
            (c.vlan, c.outcome),
            (Some(id), Outcome::Established),
            "{c:?}"
        );
        assert_eq!(c.ca_key_id.as_deref(), Some(ca_a.key_id()));
        assert_eq!(pcap.counters.packets(), frames.len() as u64, "VLAN {id}");
        for s in &seen {
            assert_nothing_lost(s);
        }
        for s in &seen[1..] {
            assert_same(pcap, s, &services);
        }
    }
    Ok(())
}

/// What cloudhub answers an edge's websocket upgrade with (a 5-byte reply is alert-sized).
const WS_101: &str = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

/// The incident across the veth: a Go CloudCore restarts onto CA_B after four Go edges joined
/// through CA_A; every edge then fails. libpcap and eBPF give the same records and the same
/// detector events, the trust collapse among them.
#[test]
fn incident_events_match_libpcap() -> Result<()> {
    for version in [TlsVersion::V13, TlsVersion::V12] {
        let pair = VethPair::new(12)?;
        let edges = pair.add_client_addresses(21, 4)?;
        let pki = Pki::new()?;
        let (ca_a, ca_b) = (pki.kubeedge_ca()?, pki.kubeedge_ca()?);
        let ips = [pair.server.ip(false)];
        let (leaf_a, leaf_b) = (
            server_leaf(&pki, &ca_a, &ips),
            server_leaf(&pki, &ca_b, &ips),
        );
        let certs: Vec<Leaf> = (0..4)
            .map(|i| pki.client_leaf(&ca_a, &format!("node-{i}")))
            .collect::<std::result::Result<_, _>>()?;
        let port = trustwatch_testkit::free_port()?;
        let services = services_of(&[port]);
        let taps = Taps::start(
            &pair.server_ns,
            &pair.server_if,
            &[Kind::Pcap, Kind::Ebpf(BufferKind::Ring)],
            &services,
            &Limits::default(),
            &ebpf_opts(),
            true,
        )?;
        let addr = SocketAddr::new(pair.server.ip(false), port);
        let server = pair.server_ns.run(|| {
            let mut o = go::ServerOpts::new(addr, &leaf_a);
            o.client_ca = Some(ca_a.cert_path.clone());
            o.max_version = Some(version);
            o.second = Some((&leaf_b, ca_b.cert_path.clone()));
            o.switch_after = 4;
            o.extra = vec!["-reply".into(), WS_101.into()];
            o.accept = 12;
            go::server(o)
        })??;
        let (before, after) = pair.client_ns.run(|| -> Result<_> {
            let run = |n: usize| -> Result<Vec<PeerResult>> {
                let mut out = Vec::new();
                for (ip, cert) in edges.iter().zip(&certs) {
                    let o = ClientOpts::new(addr)
                        .local_ip(*ip)
                        .version(version)
                        .attempts(n, Duration::from_millis(50));
                    out.extend(go::client(&o, &ca_a.cert_path, Some(cert), None)?);
                }
                Ok(out)
            };
            let before = run(1)?;
            std::thread::sleep(Duration::from_millis(200));
            Ok((before, run(2)?))
        })??;
        let _ = server.join_results(Duration::from_secs(5));
        let seen = taps.finish();
        assert!(before.iter().all(|r| r.ok), "{before:?}");
        assert!(after.iter().all(|r| !r.ok), "{after:?}");
        let (pcap, ebpf) = (&seen[0], &seen[1]);
        assert_nothing_lost(pcap);
        assert_nothing_lost(ebpf);
        assert_eq!(pcap.conns.len(), 12);
        assert_eq!(outcome_count(&pcap.conns, Outcome::RejectedByClient), 8);
        assert_same(pcap, ebpf, &services);
        let events = events_of(&ebpf.conns, &services);
        let names: Vec<&str> = events.iter().map(Event::name).collect();
        assert!(names.contains(&"trust_collapse"), "{version:?}: {names:?}");
        if version == TlsVersion::V12 {
            // Chains are visible in 1.2: the CA change is seen from the wire too.
            assert!(names.contains(&"ca_changed"), "{names:?}");
        }
    }
    Ok(())
}

/// TCP payload bytes per direction (client → server, server → client) in `packets`.
fn payload_per_direction(packets: &[Packet], server_port: u16) -> (u64, u64) {
    let (mut up, mut down) = (0, 0);
    for p in packets {
        if let Ok(seg) = trustwatch::decode::decode(&p.frame()) {
            if seg.dport == server_port {
                up += seg.payload.len() as u64;
            } else if seg.sport == server_port {
                down += seg.payload.len() as u64;
            }
        }
    }
    (up, down)
}

/// 1 GiB down and 32 MiB up after a mutual-TLS 1.2 handshake on a watched port: every byte
/// arrives, the record names the right chain and CA, and the eBPF source hands user space at
/// most the budget per direction (with the pipeline's feedback, far less); the rest stays in the
/// kernel, counted.
#[test]
fn bulk_copies_only_the_budget() -> Result<()> {
    const DOWN: u64 = 1 << 30;
    const UP: u64 = 32 << 20;
    let pair = VethPair::new(13)?;
    let pki = Pki::new()?;
    let ca = pki.kubeedge_ca()?;
    let leaf = server_leaf(&pki, &ca, &[pair.server.ip(false)]);
    let edge = pki.client_leaf(&ca, "node-bulk")?;
    let port = trustwatch_testkit::free_port()?;
    let services = services_of(&[port]);
    let limits = Limits::default();
    let budget = limits.handshake_window as u64;
    let taps = Taps::start(
        &pair.server_ns,
        &pair.server_if,
        &[Kind::Ebpf(BufferKind::Ring)],
        &services,
        &limits,
        &ebpf_opts(),
        true,
    )?;
    let addr = SocketAddr::new(pair.server.ip(false), port);
    let server = pair
        .server_ns
        .run(|| bulk::server(addr, &leaf, &ca, TlsVersion::V12))??;
    let started = Instant::now();
    let client = pair
        .client_ns
        .run(|| bulk::client(addr, None, &ca, &edge, TlsVersion::V12, (UP, DOWN)))??;
    let served = server.join()?;
    eprintln!(
        "bulk: {} MiB in {:.2} s",
        (DOWN + UP) >> 20,
        started.elapsed().as_secs_f64()
    );
    let seen = taps.finish().remove(0);
    assert_eq!((client.received, served.received), (DOWN, UP));
    assert_eq!(client.received_sha256, served.sent_sha256);
    assert_eq!(served.received_sha256, client.sent_sha256);

    assert_nothing_lost(&seen);
    assert_eq!(seen.conns.len(), 1);
    let c = &seen.conns[0];
    assert_eq!(c.outcome, Outcome::Established, "{c:?}");
    assert_eq!(c.ca_key_id.as_deref(), Some(ca.key_id()));
    assert_eq!(c.client_ca_key_id.as_deref(), Some(ca.key_id()));
    assert_eq!(c.server_chain.len(), 1);

    let (up, down) = payload_per_direction(&seen.packets, port);
    let k = &seen.counters.kernel;
    eprintln!(
        "bulk: delivered {} packets, {} bytes ({up} payload up, {down} down); kernel matched \
         {}, skipped {} payload bytes",
        seen.counters.packets(),
        seen.counters.bytes(),
        load(&k.matched),
        load(&k.skipped_bytes)
    );
    assert!(up > 0 && up <= budget, "up {up}");
    assert!(down > 0 && down <= budget, "down {down}");
    assert_eq!(load(&k.payload_bytes), up + down);
    assert!(load(&k.skipped_bytes) >= DOWN + UP - 2 * budget);
    // Headers only beyond that: a few dozen packets for 1 GiB, and every byte handed on is
    // either payload or a header of at most 14 + 60 + 60 bytes.
    assert!(seen.counters.packets() < 100, "{}", seen.counters.packets());
    assert!(seen.counters.bytes() <= up + down + seen.counters.packets() * 134);
    Ok(())
}

/// Without the pipeline's feedback and with a 16 KiB budget, exactly 16 KiB of each direction's
/// stream is copied (not a byte more, not a byte less), over TCX and over clsact.
#[test]
fn budget_is_exact_without_feedback() -> Result<()> {
    let pair = VethPair::new(14)?;
    let pki = Pki::new()?;
    let ca = pki.kubeedge_ca()?;
    let leaf = server_leaf(&pki, &ca, &[pair.server.ip(false)]);
    let edge = pki.client_leaf(&ca, "node-budget")?;
    for attach in [AttachMode::Tcx, AttachMode::Clsact] {
        let port = trustwatch_testkit::free_port()?;
        let services = services_of(&[port]);
        let limits = Limits {
            handshake_window: 16 << 10,
            ..Limits::default()
        };
        let opts = EbpfOptions {
            attach,
            ..ebpf_opts()
        };
        let taps = Taps::start(
            &pair.server_ns,
            &pair.server_if,
            &[Kind::Ebpf(BufferKind::Ring), Kind::Ebpf(BufferKind::Perf)],
            &services,
            &limits,
            &opts,
            false,
        )?;
        let addr = SocketAddr::new(pair.server.ip(false), port);
        let server = pair
            .server_ns
            .run(|| bulk::server(addr, &leaf, &ca, TlsVersion::V13))??;
        let client = pair
            .client_ns
            .run(|| bulk::client(addr, None, &ca, &edge, TlsVersion::V13, (8 << 20, 8 << 20)))??;
        let served = server.join()?;
        assert_eq!(client.received_sha256, served.sent_sha256);
        for seen in taps.finish() {
            assert_nothing_lost(&seen);
            let (up, down) = payload_per_direction(&seen.packets, port);
            assert_eq!(
                (up, down),
                (16 << 10, 16 << 10),
                "{attach:?} {:?}",
                seen.kind
            );
            assert_eq!(seen.conns.len(), 1);
            assert_eq!(seen.conns[0].outcome, Outcome::Established);
            assert_eq!(load(&seen.counters.kernel.decided), 0);
            assert!(load(&seen.counters.kernel.truncated) >= 2);
        }
    }
    Ok(())
}

/// A plain TCP stream of `n` bytes from the client namespace to `addr`; (sent hash, received
/// count and hash).
fn tcp_transfer(pair: &VethPair, addr: SocketAddr, n: u64) -> Result<(Vec<u8>, u64, Vec<u8>)> {
    use sha2::{Digest as _, Sha256};
    use std::io::{Read as _, Write as _};
    let listener = pair.server_ns.run(|| std::net::TcpListener::bind(addr))??;
    let reader = std::thread::spawn(move || -> std::io::Result<(u64, Vec<u8>)> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 1 << 16];
        let (mut got, mut h) = (0u64, Sha256::new());
        loop {
            let k = s.read(&mut buf)?;
            if k == 0 {
                return Ok((got, h.finalize().to_vec()));
            }
            got += k as u64;
            h.update(&buf[..k]);
        }
    });
    let sent = pair.client_ns.run(|| -> std::io::Result<Vec<u8>> {
        let mut s = std::net::TcpStream::connect(addr)?;
        // A fixed block with its sequence number in front: a lost, repeated or reordered block
        // changes the hash (cheap to make in an unoptimized test build).
        let mut buf: Vec<u8> = (0..1u32 << 16)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let (mut h, mut left, mut seq) = (Sha256::new(), n, 0u64);
        while left > 0 {
            seq += 1;
            buf[..8].copy_from_slice(&seq.to_le_bytes());
            let k = left.min(buf.len() as u64) as usize;
            s.write_all(&buf[..k])?;
            h.update(&buf[..k]);
            left -= k as u64;
        }
        Ok(h.finalize().to_vec())
    })??;
    let (got, hash) = reader.join().map_err(|_| "reader panicked")??;
    Ok((sent, got, hash))
}

/// The filters on `iface`'s clsact ingress: (a classic BPF filter is there, ours is there).
fn clsact_filters(ns: &Netns, iface: &str) -> Result<(bool, bool)> {
    let out = ns
        .command("tc")
        .args(["-j", "filter", "show", "dev", iface, "ingress"])
        .output()?;
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let (mut classic, mut ours) = (false, false);
    for f in v.as_array().into_iter().flatten() {
        let name = f["options"]["bpf_name"].as_str().unwrap_or_default();
        if f["kind"] == "bpf" && name.contains("tc_capture") {
            ours = true;
        } else if f["kind"] == "bpf" {
            classic = true;
        }
    }
    Ok((classic, ours))
}

/// Whether a TCP connection from the client namespace to `addr` gets through within 1 s.
fn connects(pair: &VethPair, addr: SocketAddr) -> Result<bool> {
    let listener = pair.server_ns.run(|| std::net::TcpListener::bind(addr))??;
    let ok = pair
        .client_ns
        .run(|| std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok())?;
    drop(listener);
    Ok(ok)
}

/// A firewall was there before us: a classic BPF filter on a clsact qdisc (direct action) that
/// drops TCP to one port. While the eBPF source is attached (TCX, first in the chain; or a
/// clsact filter ahead of it) the firewall still drops that port, every byte of a 256 MiB stream
/// to a watched port and of one to an unwatched port arrives unchanged, and afterwards the
/// firewall and its qdisc remain while our filter is gone.
#[test]
fn traffic_untouched_and_existing_tc_filters_keep_working() -> Result<()> {
    let pair = VethPair::new(15)?;
    let s = &pair.server_if;
    let blocked = trustwatch_testkit::free_port()?;
    let server_ip = pair.server.ip(false);
    assert!(connects(&pair, SocketAddr::new(server_ip, blocked))?);
    // ldh [12]; jeq IPv4; ldb [23]; jeq TCP; ldxb 4*([14]&0xf); ldh [x+16]; jeq port:
    // TC_ACT_SHOT (2), else TC_ACT_OK (0).
    let bytecode = format!(
        "9,40 0 0 12,21 0 5 2048,48 0 0 23,21 0 3 6,177 0 0 14,72 0 0 16,21 1 0 {blocked},6 0 0 0,6 0 0 2"
    );
    let tc = |args: &[&str]| -> Result<()> {
        let st = pair.server_ns.command("tc").args(args).status()?;
        if !st.success() {
            return Err(format!("tc {args:?} failed").into());
        }
        Ok(())
    };
    tc(&["qdisc", "add", "dev", s, "clsact"])?;
    tc(&[
        "filter", "add", "dev", s, "ingress", "bpf", "da", "bytecode", &bytecode,
    ])?;
    assert!(
        !connects(&pair, SocketAddr::new(server_ip, blocked))?,
        "the firewall works"
    );
    assert_eq!(clsact_filters(&pair.server_ns, s)?, (true, false));
    for attach in [AttachMode::Tcx, AttachMode::Clsact] {
        let (watched, other) = (
            trustwatch_testkit::free_port()?,
            trustwatch_testkit::free_port()?,
        );
        let services = services_of(&[watched, blocked]);
        let opts = EbpfOptions {
            attach,
            ..ebpf_opts()
        };
        let taps = Taps::start(
            &pair.server_ns,
            s,
            &[Kind::Ebpf(BufferKind::Ring)],
            &services,
            &Limits::default(),
            &opts,
            true,
        )?;
        assert_eq!(
            clsact_filters(&pair.server_ns, s)?,
            (true, attach == AttachMode::Clsact),
            "{attach:?}"
        );
        assert!(
            !connects(&pair, SocketAddr::new(server_ip, blocked))?,
            "{attach:?}: the firewall still drops"
        );
        for port in [watched, other] {
            let (sent, got, hash) =
                tcp_transfer(&pair, SocketAddr::new(server_ip, port), 256 << 20)?;
            assert_eq!(got, 256 << 20, "{attach:?} port {port}");
            assert_eq!(sent, hash, "{attach:?} port {port}");
        }
        let seen = taps.finish();
        let seen = &seen[0];
        assert_nothing_lost(seen);
        // Only watched connections reached the program's output: the stream to `watched`
        // (SYN, FIN, its first bytes) and the SYNs the firewall then dropped.
        let mut ports_seen: Vec<u16> = seen
            .packets
            .iter()
            .filter_map(|p| trustwatch::decode::decode(&p.frame()).ok())
            .map(|g| {
                if g.sport == watched || g.sport == blocked {
                    g.sport
                } else {
                    g.dport
                }
            })
            .collect();
        ports_seen.sort_unstable();
        ports_seen.dedup();
        let mut want = vec![watched, blocked];
        want.sort_unstable();
        assert_eq!(ports_seen, want, "{attach:?}");
        assert!(load(&seen.counters.kernel.seen) > 2 * (256 << 20) / 65536);
        assert_eq!(
            clsact_filters(&pair.server_ns, s)?,
            (true, false),
            "{attach:?}: the firewall stays, ours is gone"
        );
        assert!(!connects(&pair, SocketAddr::new(server_ip, blocked))?);
        let qdisc = pair
            .server_ns
            .command("tc")
            .args(["qdisc", "show", "dev", s])
            .output()?;
        assert!(String::from_utf8_lossy(&qdisc.stdout).contains("clsact"));
    }
    Ok(())
}

/// One TLS 1.3 handshake from the client namespace to `port` (rustls both sides).
fn one_handshake(pair: &VethPair, pki: &Pki, ca: &Ca, leaf: &Leaf, port: u16) -> Result<()> {
    let edge = pki.client_leaf(ca, "node-x")?;
    let addr = SocketAddr::new(pair.server.ip(false), port);
    let srv = pair.server_ns.run(|| {
        let mut r = rustls_peer::ServerOpts::new(leaf);
        r.listen = addr;
        r.client_roots = Some(vec![ca.root.der.clone()]);
        rustls_peer::server(r)
    })??;
    let res = pair.client_ns.run(|| {
        peers::run_client(
            peers::Stack::Rustls,
            &ClientOpts::new(addr),
            ca,
            Some(&edge),
        )
    })??;
    let _ = srv.join();
    assert!(res.iter().all(|r| r.ok), "{res:?}");
    Ok(())
}

/// A second eBPF source on the same interface goes first in the TCX chain and both see the
/// traffic; a panic on the thread owning the second one detaches it while the first keeps
/// capturing; `trustwatch live --source ebpf` (a third) detaches on SIGTERM and exits 0.
#[test]
fn second_instance_panic_and_sigterm() -> Result<()> {
    let pair = VethPair::new(16)?;
    let pki = Pki::new()?;
    let ca = pki.kubeedge_ca()?;
    let leaf = server_leaf(&pki, &ca, &[pair.server.ip(false)]);
    let port = trustwatch_testkit::free_port()?;
    let services = services_of(&[port]);
    let iface = pair.server_if.clone();
    let tcx = |ns: &Netns| -> Result<Vec<u32>> {
        let i = iface.clone();
        Ok(ns.run(move || attach::tcx_programs(&i, false))??)
    };
    let first = Taps::start(
        &pair.server_ns,
        &iface,
        &[Kind::Ebpf(BufferKind::Ring)],
        &services,
        &Limits::default(),
        &ebpf_opts(),
        true,
    )?;
    let chain1 = tcx(&pair.server_ns)?;
    assert_eq!(chain1.len(), 1);
    // The second one, opened by hand to know its program id.
    let second = pair
        .server_ns
        .run(|| EbpfSource::open(&iface, &services, &ebpf_opts()))??;
    let second_id = second.program_id().ok_or("no program id")?;
    assert_eq!(
        tcx(&pair.server_ns)?,
        [second_id, chain1[0]],
        "attached first"
    );
    let (tx, rx) = sync_channel(1 << 16);
    let stop2 = StopSignal::new();
    let owner = {
        let stop2 = stop2.clone();
        let h = pair.server_ns.handle()?;
        std::thread::spawn(move || {
            h.enter().expect("netns");
            let mut source = second;
            let mut sink = tx;
            let _ = source.run(&mut sink, &stop2);
            // Something else on this thread fails while the source is held.
            panic!("a bug elsewhere");
        })
    };
    one_handshake(&pair, &pki, &ca, &leaf, port)?;
    std::thread::sleep(Duration::from_millis(300));
    let second_packets = rx.try_iter().count();
    assert!(
        second_packets >= 8,
        "the second instance saw {second_packets}"
    );
    stop2.stop();
    assert!(owner.join().is_err(), "the owner thread panicked");
    assert_eq!(
        tcx(&pair.server_ns)?,
        chain1,
        "the panic detached the second"
    );

    // `trustwatch live` as a third instance, stopped with SIGTERM.
    let listen = format!("127.0.0.1:{}", trustwatch_testkit::free_port()?);
    let child = pair
        .server_ns
        .command(BIN)
        .args([
            "live", "--source", "ebpf", "--iface", &iface, "--listen", &listen,
        ])
        .args(["--ports", &port.to_string(), "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while tcx(&pair.server_ns)?.len() < 2 {
        assert!(Instant::now() < deadline, "trustwatch live did not attach");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Attached before the signal handlers are installed: give it a moment.
    std::thread::sleep(Duration::from_secs(1));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output()?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tcx(&pair.server_ns)?, chain1, "SIGTERM detached it");

    // The first never stopped seeing traffic.
    one_handshake(&pair, &pki, &ca, &leaf, port)?;
    let seen = first.finish().remove(0);
    assert_nothing_lost(&seen);
    assert_eq!(seen.conns.len(), 2);
    assert!(seen.conns.iter().all(|c| c.outcome == Outcome::Established));
    assert_eq!(tcx(&pair.server_ns)?, Vec::<u32>::new());
    Ok(())
}

/// As user nobody with only CAP_NET_RAW: `auto` falls back to libpcap and says which
/// capabilities eBPF lacks; `ebpf` exits 2 with that reason on one line.
#[test]
fn without_capabilities_auto_falls_back_and_ebpf_exits_2() -> Result<()> {
    let setpriv = |extra: &[&str]| {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all,+net_raw",
            "--ambient-caps=-all,+net_raw",
        ]);
        c.arg(BIN).args(extra);
        c
    };
    let listen = format!("127.0.0.1:{}", trustwatch_testkit::free_port()?);
    let out = setpriv(&[
        "live", "--source", "ebpf", "--iface", "lo", "--listen", &listen,
    ])
    .stdin(Stdio::null())
    .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("--source ebpf: missing CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON"),
        "{err}"
    );

    let mut child = setpriv(&[
        "live", "--source", "auto", "--iface", "lo", "--listen", &listen,
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()?;
    let stderr = child.stderr.take().ok_or("stderr")?;
    // Read stderr to the end (a closed pipe would fail the monitor's last line); the first two
    // lines come through a channel.
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(std::result::Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let lines: Vec<String> = (0..2)
        .filter_map(|_| rx.recv_timeout(Duration::from_secs(10)).ok())
        .collect();
    // The signal handler is installed right after the second line.
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait()?;
    let _ = reader.join();
    assert!(
        lines.iter().any(|l| l.contains(
            "capture backend: libpcap (eBPF unavailable: missing CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON"
        )),
        "{lines:?}"
    );
    assert_eq!(status.code(), Some(0), "{lines:?}");
    Ok(())
}

/// `--iface any`: one eBPF source on every interface of the namespace — `lo` (ingress only), the
/// veth, and a veth added while it runs (attached within about a second) — gives the same
/// records as libpcap on `any`; nothing stays attached afterwards.
#[test]
fn any_interface_includes_loopback_and_new_interfaces() -> Result<()> {
    let pair = VethPair::new(17)?;
    let pki = Pki::new()?;
    let ca = pki.kubeedge_ca()?;
    let late_server = std::net::Ipv4Addr::new(10, 17, 1, 1);
    let leaf = server_leaf(
        &pki,
        &ca,
        &[
            pair.server.ip(false),
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::V4(late_server),
        ],
    );
    let edge = pki.client_leaf(&ca, "node-any")?;
    let port = trustwatch_testkit::free_port()?;
    let services = services_of(&[port]);
    let taps = Taps::start(
        &pair.server_ns,
        "any",
        &[Kind::Pcap, Kind::Ebpf(BufferKind::Ring)],
        &services,
        &Limits::default(),
        &ebpf_opts(),
        true,
    )?;
    let attached = |iface: &str, egress: bool| -> Result<usize> {
        let i = iface.to_string();
        Ok(pair
            .server_ns
            .run(move || attach::tcx_programs(&i, egress))??
            .len())
    };
    assert_eq!(attached("lo", false)?, 1);
    assert_eq!(attached("lo", true)?, 0, "lo: ingress only");
    assert_eq!(attached(&pair.server_if, true)?, 1);

    // A handshake to `to` from a client running in `client` (a namespace).
    let handshake = |to: SocketAddr, client: &Netns| -> Result<()> {
        let srv = pair.server_ns.run(|| {
            let mut r = rustls_peer::ServerOpts::new(&leaf);
            r.listen = to;
            r.client_roots = Some(vec![ca.root.der.clone()]);
            rustls_peer::server(r)
        })??;
        let res = client.run(|| {
            peers::run_client(peers::Stack::Rustls, &ClientOpts::new(to), &ca, Some(&edge))
        })??;
        let _ = srv.join();
        assert!(res.iter().all(|r| r.ok), "{to}: {res:?}");
        Ok(())
    };
    handshake(
        SocketAddr::new(pair.server.ip(false), port),
        &pair.client_ns,
    )?;
    handshake(SocketAddr::from(([127, 0, 0, 1], port)), &pair.server_ns)?;

    // A second veth pair between the namespaces, made now.
    let (s2, c2) = ("twsany2", "twcany2");
    trustwatch_testkit::netns::ip(&[
        "link",
        "add",
        s2,
        "netns",
        &pair.server_ns.name,
        "type",
        "veth",
        "peer",
        "name",
        c2,
        "netns",
        &pair.client_ns.name,
    ])?;
    pair.server_ns
        .ip(&["addr", "add", &format!("{late_server}/24"), "dev", s2])?;
    pair.client_ns
        .ip(&["addr", "add", "10.17.1.2/24", "dev", c2])?;
    pair.server_ns.ip(&["link", "set", s2, "up"])?;
    pair.client_ns.ip(&["link", "set", c2, "up"])?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while attached(s2, false)? == 0 {
        assert!(
            Instant::now() < deadline,
            "the new interface was not attached"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    handshake(
        SocketAddr::new(IpAddr::V4(late_server), port),
        &pair.client_ns,
    )?;

    let seen = taps.finish();
    for s in &seen {
        assert_nothing_lost(s);
    }
    assert_eq!(seen[0].conns.len(), 3, "{:#?}", seen[0].conns);
    assert!(
        seen[0]
            .conns
            .iter()
            .all(|c| c.outcome == Outcome::Established)
    );
    assert_same(&seen[0], &seen[1], &services);
    assert_eq!(attached("lo", false)?, 0);
    assert_eq!(attached(&pair.server_if, false)?, 0);
    Ok(())
}

/// The verifier's limit on instructions processed per program load (kernel ≥ 5.2).
const VERIFIER_LIMIT: u32 = 1_000_000;

/// Every configuration the program can be loaded in (link kinds, buffers, the header-copy path,
/// any port, more ports than `CONFIG` lists) is accepted, and the verifier's work for each stays
/// under half its limit: the number depends on the kernel version, so a program that only just
/// fits here would be refused on another kernel. Each load-time constant prunes branches, so
/// the configurations are verified one by one.
#[test]
fn every_configuration_verifies_with_headroom() -> Result<()> {
    use trustwatch::capture::ebpf::load;
    use trustwatch_ebpf::{LINK_ETHERNET, LINK_PER_IFACE, LINK_RAW_IP, MAX_LISTED_PORTS, names};
    let few = services_of(&ports4()?);
    let many: Services = (0..=MAX_LISTED_PORTS as u16)
        .map(|i| (20_000 + i).to_string())
        .collect::<Vec<_>>()
        .join(",")
        .parse()?;
    let mut most = (0, String::new());
    for link in [LINK_ETHERNET, LINK_RAW_IP, LINK_PER_IFACE] {
        for buffer in [BufferKind::Ring, BufferKind::Perf] {
            for copy_headers in [false, true] {
                for (ports, any_port) in [(&few, false), (&many, false), (&few, true)] {
                    let mut services = ports.clone();
                    services.any_port = any_port;
                    let opts = EbpfOptions {
                        buffer,
                        copy_headers,
                        ..ebpf_opts()
                    };
                    let what = format!(
                        "link {link}, {buffer:?}, copy_headers {copy_headers}, any_port \
                         {any_port}, {} ports",
                        services.ports().count()
                    );
                    let ebpf =
                        load::load(&opts, &services, link).map_err(|e| format!("{what}: {e}"))?;
                    let program: &aya::programs::SchedClassifier = ebpf
                        .program(names::PROGRAM)
                        .ok_or("no program")?
                        .try_into()?;
                    let n = program
                        .info()?
                        .verified_instruction_count()
                        .ok_or("the kernel does not report verified instructions")?;
                    if n > most.0 {
                        most = (n, what);
                    }
                }
            }
        }
    }
    eprintln!("most instructions verified: {} ({})", most.0, most.1);
    assert!(
        most.0 < VERIFIER_LIMIT / 2,
        "{} of {VERIFIER_LIMIT} instructions verified ({})",
        most.0,
        most.1
    );
    Ok(())
}

/// An Ethernet/IPv6 frame from port `sport` to port 10000 with the extension headers `ext`
/// (each: its type and its bytes, the next-header field filled in here), then a TCP segment
/// (PSH+ACK) with 100 bytes of payload.
fn ipv6_frame(sport: u16, ext: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut tail = Vec::new();
    for (i, (_, bytes)) in ext.iter().enumerate() {
        let mut h = bytes.clone();
        h[0] = ext.get(i + 1).map_or(6, |(t, _)| *t);
        tail.extend(h);
    }
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&10000u16.to_be_bytes());
    tcp[4..8].copy_from_slice(&7u32.to_be_bytes());
    tcp[12] = 0x50;
    tcp[13] = 0x18;
    tail.extend(tcp);
    tail.extend([0x16u8; 100]);
    let mut f = vec![0u8; 12];
    f.extend([0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend(u16::try_from(tail.len()).expect("short").to_be_bytes());
    f.push(ext.first().map_or(6, |(t, _)| *t));
    f.push(64);
    f.extend([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    f.extend([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    f.extend(tail);
    f
}

/// The IPv6 extension-header walk, run by the kernel on synthetic frames (`BPF_PROG_TEST_RUN`,
/// nothing attached), headers read in place and through the copy path: each kind of extension
/// header is stepped over to the TCP segment, which is copied whole; a later fragment, a fifth
/// extension header and a header past the frame's end are not.
#[test]
fn ipv6_extension_headers_are_walked_to_tcp() -> Result<()> {
    use std::ops::ControlFlow;

    use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
    use trustwatch::capture::ebpf::buffers::Buffers;
    use trustwatch::capture::ebpf::load;
    use trustwatch_ebpf::{LINK_ETHERNET, names};
    let opt = |len_units: u8, n: usize| {
        let mut h = vec![0u8; n];
        h[1] = len_units;
        h
    };
    let fragment = |offset: u16| {
        let mut h = vec![0u8; 8];
        h[2..4].copy_from_slice(&(offset << 3 | 1).to_be_bytes());
        h
    };
    /// What the frame carries, its extension headers, whether it is copied.
    type Case = (&'static str, Vec<(u8, Vec<u8>)>, bool);
    let cases: Vec<Case> = vec![
        ("none", vec![], true),
        ("hop-by-hop", vec![(0, opt(0, 8))], true),
        (
            "routing 24 B, destination options",
            vec![(43, opt(2, 24)), (60, opt(0, 8))],
            true,
        ),
        ("AH 24 B", vec![(51, opt(4, 24))], true),
        ("first fragment", vec![(44, fragment(0))], true),
        ("later fragment", vec![(44, fragment(185))], false),
        (
            "four",
            vec![
                (0, opt(0, 8)),
                (60, opt(1, 16)),
                (43, opt(0, 8)),
                (51, opt(1, 12)),
            ],
            true,
        ),
        (
            "five",
            vec![
                (0, opt(0, 8)),
                (60, opt(0, 8)),
                (60, opt(0, 8)),
                (60, opt(0, 8)),
                (60, opt(0, 8)),
            ],
            false,
        ),
        ("hop-by-hop claiming 2 KiB", vec![(0, opt(255, 8))], false),
    ];
    let services: Services = "10000".parse()?;
    for copy_headers in [false, true] {
        let opts = EbpfOptions {
            copy_headers,
            ..ebpf_opts()
        };
        let mut ebpf = load::load(&opts, &services, LINK_ETHERNET)?;
        let mut buffers = Buffers::open(&mut ebpf, opts.buffer, opts.buffer_size)?;
        let program: &mut SchedClassifier = ebpf
            .program_mut(names::PROGRAM)
            .ok_or("no program")?
            .try_into()?;
        for (i, (what, ext, copied)) in cases.iter().enumerate() {
            let frame = ipv6_frame(40_000 + i as u16, ext);
            let mut o = TestRunOptions::new();
            o.data_in = Some(&frame);
            program.test_run(o)?;
            let mut records = Vec::new();
            let _ = buffers.drain(u64::MAX, &mut |_, parts| {
                records.push(parts.concat());
                ControlFlow::Continue(())
            });
            let want = if *copied { vec![frame] } else { vec![] };
            assert_eq!(records, want, "{what}, copy_headers {copy_headers}");
        }
    }
    Ok(())
}

/// An Ethernet/IPv4 SYN from 10.9.0.2:`sport` to 10.9.0.1:10000.
fn ipv4_syn(sport: u16) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f.extend([0x08, 0x00]);
    f.extend([0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0]);
    f.extend([10, 9, 0, 2, 10, 9, 0, 1]);
    f.extend(sport.to_be_bytes());
    f.extend(10000u16.to_be_bytes());
    f.extend(1u32.to_be_bytes());
    f.extend([0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    f
}

/// The ring buffer's reader is woken once per `wakeup_bytes` written — by the record that takes
/// the bytes waiting to the next multiple — not by every record once that much waits, which
/// while the reader lags cost an inter-processor interrupt per record. Run by the kernel on
/// synthetic SYNs (`BPF_PROG_TEST_RUN`) with nobody reading, so the bytes waiting only grow.
#[test]
fn ring_reader_is_woken_once_per_wakeup_bytes() -> Result<()> {
    use aya::maps::PerCpuArray;
    use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
    use trustwatch::capture::ebpf::load::{self, RING_WAKEUP_FRACTION};
    use trustwatch_ebpf::{
        CpuState, LINK_ETHERNET, RECORD_HEADER_LEN, RING_BUCKETS, RING_RECORD_OVERHEAD, names,
    };
    let opts = EbpfOptions {
        buffer_size: 256 << 10,
        ..ebpf_opts()
    };
    let services: Services = "10000".parse()?;
    let mut ebpf = load::load(&opts, &services, LINK_ETHERNET)?;
    let program: &mut SchedClassifier = ebpf
        .program_mut(names::PROGRAM)
        .ok_or("no program")?
        .try_into()?;
    // A SYN's record: the ring's header, ours, the smallest bucket (54 frame bytes).
    let record = RING_RECORD_OVERHEAD + RECORD_HEADER_LEN + RING_BUCKETS[0] as usize;
    let every = load::ring_bytes(opts.buffer_size) / RING_WAKEUP_FRACTION;
    // Ten and a half marks' worth, well short of a full ring.
    let n = every * 21 / 2 / record;
    for i in 0..n {
        let frame = ipv4_syn(20_000 + i as u16);
        let mut o = TestRunOptions::new();
        o.data_in = Some(&frame);
        program.test_run(o)?;
    }
    let counters: PerCpuArray<_, CpuState> =
        PerCpuArray::try_from(ebpf.map(names::COUNTERS).ok_or("no counters")?)?;
    let per_cpu = counters.get(&0, 0)?;
    let sum = |f: fn(&CpuState) -> u64| per_cpu.iter().map(f).sum::<u64>();
    assert_eq!(sum(|c| c.counters.records), n as u64, "records written");
    assert_eq!(sum(|c| c.counters.ring_full), 0, "records lost");
    assert_eq!(
        sum(|c| c.counters.wakeups),
        (n * record / every) as u64,
        "wakeups for {n} records of {record} bytes, one per {every} bytes"
    );
    Ok(())
}

/// Perf buffers wake their reader once more than `load::wakeup_bytes` wait, not on every record
/// (aya 0.14's perf buffers did: an interrupt per packet, inside the program's run). Run by the
/// kernel on synthetic SYNs (`BPF_PROG_TEST_RUN`) on one CPU; `poll(2)` reports a wakeup since
/// the last poll.
#[test]
fn perf_reader_is_woken_only_past_the_watermark() -> Result<()> {
    use std::os::fd::{AsFd as _, AsRawFd as _};

    use aya::maps::Map;
    use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
    use trustwatch::capture::ebpf::buffers::sample;
    use trustwatch::capture::ebpf::load;
    use trustwatch::capture::ebpf::perf::PerfBuffer;
    use trustwatch_ebpf::{LINK_ETHERNET, RECORD_HEADER_LEN, names};

    // The program writes to the buffer of the CPU it runs on: keep this thread on one.
    let cpu = aya::util::online_cpus().map_err(|(what, e)| format!("{what}: {e}"))?[0];
    // SAFETY: a zeroed cpu_set_t is the empty set; this thread's affinity is changed.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set),
            0
        );
    }
    let opts = EbpfOptions {
        buffer: BufferKind::Perf,
        ..ebpf_opts()
    };
    let services: Services = "10000".parse()?;
    let mut ebpf = load::load(&opts, &services, LINK_ETHERNET)?;
    let Some(Map::PerfEventArray(array)) = ebpf.take_map(names::PERF) else {
        return Err("no perf event array".into());
    };
    let pages = 16;
    let wakeup = load::wakeup_bytes(pages * load::page_size()) as usize;
    let mut buf = PerfBuffer::open(array.fd().as_fd(), cpu, pages, wakeup as u32)?;
    let program: &mut SchedClassifier = ebpf
        .program_mut(names::PROGRAM)
        .ok_or("no program")?
        .try_into()?;
    let mut sport = 20_000u16;
    let mut run = |n: usize| -> Result<()> {
        for _ in 0..n {
            let frame = ipv4_syn(sport);
            sport += 1;
            let mut o = TestRunOptions::new();
            o.data_in = Some(&frame);
            program.test_run(o)?;
        }
        Ok(())
    };
    let woken = |buf: &PerfBuffer| {
        let mut fd = libc::pollfd {
            fd: buf.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no wait.
        unsafe { libc::poll(&mut fd, 1, 0) == 1 && fd.revents & libc::POLLIN != 0 }
    };
    // A SYN's sample: perf's header (8 bytes) and size (4), ours, the 54 frame bytes, padded to 8.
    let record = (8 + 4 + RECORD_HEADER_LEN + 54).next_multiple_of(8);
    // As many as fit within the watermark: the kernel wakes once more than it waits.
    let below = wakeup / record;
    assert!(below >= 8, "{wakeup} bytes, {record}-byte records");
    run(below)?;
    assert!(buf.readable(), "no records");
    assert!(
        !woken(&buf),
        "woken with {} bytes waiting, watermark {wakeup}",
        below * record
    );
    run(1)?;
    assert!(woken(&buf), "{} bytes waiting", (below + 1) * record);
    let mut frames = Vec::new();
    let broken = buf.drain(|head, tail| {
        let (hdr, [a, b]) = sample(head, tail).expect("a whole record");
        frames.push((hdr.caplen, [a, b].concat()));
    });
    assert_eq!(broken, 0);
    assert_eq!(frames.len(), below + 1, "samples drained");
    for (i, (caplen, frame)) in frames.iter().enumerate() {
        assert_eq!(*caplen, 54);
        assert_eq!(frame, &ipv4_syn(20_000 + i as u16), "sample {i}");
    }
    assert!(!buf.readable(), "records left after the drain");
    // Around the end of the buffer and back: every record whole, in order, some in two pieces.
    let size = pages * load::page_size();
    let (mut next, mut wrapped) = (frames.len(), 0);
    for _ in 0..(2 * size).div_ceil(record * 300) {
        run(300)?;
        let broken = buf.drain(|head, tail| {
            wrapped += usize::from(!tail.is_empty());
            let (_, [a, b]) = sample(head, tail).expect("a whole record");
            assert_eq!(
                [a, b].concat(),
                ipv4_syn(20_000 + next as u16),
                "record {next}"
            );
            next += 1;
        });
        assert_eq!(broken, 0);
    }
    assert_eq!(next, below + 1 + 300 * (2 * size).div_ceil(record * 300));
    assert!(wrapped >= 1, "no record wrapped in {next}");
    Ok(())
}
