//! Seed corpora for the fuzz targets in `monitor/fuzz/` (`cargo xtask fuzz` runs this first):
//! `cargo run -p trustwatch-testkit --example fuzz_seeds -- OUT_DIR [VALIDATION_PCAPS_DIR]`.
//!
//! Writes `OUT_DIR/<target>/<name>` in the input formats of `trustwatch::fuzz` (see there):
//! - `pipeline`: the public validation captures and small generated ones (a TLS 1.2 handshake
//!   failing on the certificate, each hostile attack at a few connections) as length-prefixed
//!   frames, each also with tight limits;
//! - `tls_stream`: the TCP payloads of the first flows of the same captures, per direction;
//! - `certs`: generated certificates (KubeEdge CA, leaves, an intermediate chain, a padded CA) and
//!   certificates found in the validation captures;
//! - `file_reader`: the first 16 KiB of every validation capture (pcap and pcapng) and the
//!   generated captures;
//! - `ebpf_records`: the Ethernet frames of the same captures as the TC program's records, read
//!   as ring records and as perf samples wrapped at several places, some with a VLAN tag in the
//!   metadata.
//!
//! Seeds are kept small (tens of kilobytes at most): libFuzzer's default input limit is 4 KiB
//! grown as coverage needs, and the inputs that matter are the structure, not the bulk.

use std::collections::HashMap;
use std::io::BufReader;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::{Block, PcapNgReader};
use trustwatch_testkit::hostile::{self, Pcap};
use trustwatch_testkit::pki::Pki;

const MAX_SEED: usize = 48 * 1024;
const MAX_FRAMES: usize = 300;

/// One packet of a capture: time (ns), link type, bytes.
struct Frame {
    ts_ns: u128,
    link: u32,
    data: Vec<u8>,
}

fn read_capture(path: &Path) -> Vec<Frame> {
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    let mut frames = Vec::new();
    if bytes.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]) {
        let Ok(mut r) = PcapNgReader::new(&bytes[..]) else {
            return frames;
        };
        let mut links = Vec::new();
        while let Some(Ok(block)) = r.next_block() {
            match block {
                Block::InterfaceDescription(i) => links.push(i.linktype.into()),
                Block::EnhancedPacket(p) => frames.push(Frame {
                    ts_ns: p.timestamp.as_nanos(),
                    link: links.get(p.interface_id as usize).copied().unwrap_or(1),
                    data: p.data.into_owned(),
                }),
                _ => {}
            }
            if frames.len() >= MAX_FRAMES {
                break;
            }
        }
    } else if let Ok(mut r) = PcapReader::new(BufReader::new(&bytes[..])) {
        let link: u32 = r.header().datalink.into();
        while let Some(Ok(p)) = r.next_packet() {
            frames.push(Frame {
                ts_ns: p.timestamp.as_nanos(),
                link,
                data: p.data.into_owned(),
            });
            if frames.len() >= MAX_FRAMES {
                break;
            }
        }
    }
    frames
}

/// The `trustwatch::fuzz::pipeline` link-type index of a libpcap link type.
fn link_index(link: u32) -> Option<u8> {
    Some(match link {
        1 => 0,
        101 | 12 | 14 => 1,
        0 => 2,
        113 => 3,
        276 => 4,
        228 => 5,
        229 => 6,
        108 => 7,
        _ => return None,
    })
}

/// The pipeline input for `frames`, with configuration byte `config` (link type added).
fn pipeline_input(frames: &[Frame], config: u8) -> Option<Vec<u8>> {
    let first = frames.first()?;
    let mut out = vec![config | link_index(first.link)?];
    let mut last = first.ts_ns;
    for f in frames.iter().filter(|f| f.link == first.link) {
        let step = (f.ts_ns.saturating_sub(last) / 10_000_000).min(255) as u8;
        last = f.ts_ns;
        let data = &f.data[..f.data.len().min(u16::MAX as usize)];
        if out.len() + 3 + data.len() > MAX_SEED {
            break;
        }
        out.extend_from_slice(&(data.len() as u16).to_le_bytes());
        out.push(step);
        out.extend_from_slice(data);
    }
    Some(out)
}

/// The `trustwatch::fuzz::ebpf_records` input for the Ethernet frames of `frames`: records
/// with `flags`, the n-th read with cut `cuts[n % cuts.len()]`.
fn ebpf_input(frames: &[Frame], flags: u16, cuts: &[u8]) -> Option<Vec<u8>> {
    use trustwatch_ebpf::{RECORD_HEADER_LEN, RecordHeader};
    let mut out = Vec::new();
    for (n, f) in frames.iter().filter(|f| f.link == 1).enumerate() {
        let data = &f.data[..f.data.len().min(4096)];
        let hdr = RecordHeader {
            ts_ns: f.ts_ns as u64,
            ifindex: 2,
            len: f.data.len() as u32,
            caplen: data.len() as u32,
            flags,
            vlan_tci: 100,
            vlan_proto: 0x8100,
            ..Default::default()
        };
        // SAFETY: RecordHeader is plain integers (repr(C)); viewing it as bytes is sound.
        let head = unsafe {
            std::slice::from_raw_parts(std::ptr::from_ref(&hdr).cast::<u8>(), RECORD_HEADER_LEN)
        };
        // Padded to 8 bytes, as perf samples are.
        let pad = (8 - (RECORD_HEADER_LEN + data.len()) % 8) % 8;
        if out.len() + 3 + head.len() + data.len() + pad > MAX_SEED {
            break;
        }
        out.extend_from_slice(&((head.len() + data.len() + pad) as u16).to_le_bytes());
        out.push(cuts[n % cuts.len()]);
        out.extend_from_slice(head);
        out.extend_from_slice(data);
        out.extend(std::iter::repeat_n(0, pad));
    }
    (!out.is_empty()).then_some(out)
}

/// TCP payloads of an Ethernet/IPv4 or IPv6 frame: (src port, dst port, flags, payload).
fn tcp_of(link: u32, data: &[u8]) -> Option<(u16, u16, u8, &[u8])> {
    let ip = match link {
        1 => {
            let mut off = 12;
            let mut ty = u16::from_be_bytes([*data.get(off)?, *data.get(off + 1)?]);
            while ty == 0x8100 || ty == 0x88a8 {
                off += 4;
                ty = u16::from_be_bytes([*data.get(off)?, *data.get(off + 1)?]);
            }
            data.get(off + 2..)?
        }
        101 | 12 | 14 | 228 | 229 => data,
        0 | 108 => data.get(4..)?,
        113 => data.get(16..)?,
        276 => data.get(20..)?,
        _ => return None,
    };
    let (proto, tcp) = match ip.first()? >> 4 {
        4 => {
            let ihl = usize::from(ip[0] & 15) * 4;
            let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
            (*ip.get(9)?, ip.get(ihl..total.min(ip.len()))?)
        }
        6 => {
            let len = usize::from(u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?]));
            (*ip.get(6)?, ip.get(40..(40 + len).min(ip.len()))?)
        }
        _ => return None,
    };
    if proto != 6 {
        return None;
    }
    let off = usize::from(tcp.get(12)? >> 4) * 4;
    Some((
        u16::from_be_bytes([tcp[0], tcp[1]]),
        u16::from_be_bytes([tcp[2], tcp[3]]),
        *tcp.get(13)?,
        tcp.get(off..)?,
    ))
}

/// `tls_stream` inputs: for the first flows of `frames`, their payloads per direction (the
/// server is the lower port), FIN and RST as close operations.
fn tls_inputs(frames: &[Frame]) -> Vec<Vec<u8>> {
    let mut flows: HashMap<(u16, u16), Vec<u8>> = HashMap::new();
    let mut order = Vec::new();
    for f in frames {
        let Some((sp, dp, flags, payload)) = tcp_of(f.link, &f.data) else {
            continue;
        };
        let key = (sp.min(dp), sp.max(dp));
        let server_side = sp < dp;
        let ops = flows.entry(key).or_insert_with(|| {
            order.push(key);
            Vec::new()
        });
        let side = u8::from(server_side);
        if !payload.is_empty() && ops.len() + payload.len() + 3 < MAX_SEED {
            ops.push(side);
            ops.extend_from_slice(&(payload.len() as u16).to_le_bytes());
            ops.extend_from_slice(payload);
        }
        if flags & 0x05 != 0 {
            ops.push(side | if flags & 0x04 != 0 { 6 } else { 4 });
            ops.extend_from_slice(&[0, 0]);
        }
    }
    order
        .into_iter()
        .filter_map(|k| flows.remove(&k))
        .filter(|ops| ops.len() > 8)
        .take(4)
        .collect()
}

/// DER certificates inside `bytes`: a SEQUENCE with a two-byte length holding a SEQUENCE (the
/// TBSCertificate), the shape every certificate on the wire has.
fn find_certs(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 8 < bytes.len() {
        if bytes[i] == 0x30 && bytes[i + 1] == 0x82 && bytes[i + 4] == 0x30 && bytes[i + 5] == 0x82
        {
            let len = usize::from(u16::from_be_bytes([bytes[i + 2], bytes[i + 3]])) + 4;
            if len > 200 && i + len <= bytes.len() {
                out.push(bytes[i..i + len].to_vec());
                i += len;
                continue;
            }
        }
        i += 1;
    }
    out
}

fn certs_input(ders: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for d in ders {
        out.extend_from_slice(&(d.len().min(u16::MAX as usize) as u16).to_le_bytes());
        out.extend_from_slice(&d[..d.len().min(u16::MAX as usize)]);
    }
    out
}

struct Out {
    dir: PathBuf,
    written: HashMap<&'static str, usize>,
}

impl Out {
    fn put(&mut self, target: &'static str, name: &str, data: &[u8]) -> std::io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let dir = self.dir.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), data)?;
        *self.written.entry(target).or_default() += 1;
        Ok(())
    }
}

/// Small generated captures: each attack at a few connections, on CloudCore's port 10000.
fn generated(dir: &Path, pki: &Pki) -> trustwatch_testkit::Result<Vec<(String, PathBuf)>> {
    let server = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 10000);
    let (start, span) = (Duration::from_secs(1_700_000_000), Duration::from_secs(2));
    let ca = pki.kubeedge_ca()?;
    let leaf = pki.server_leaf(&ca)?;
    let chain = leaf.chain_der();
    let refs: Vec<&[u8]> = chain.iter().map(Vec::as_slice).collect();
    let padded = pki.root_ca("Padded", Some(7), 3_000)?;
    let mut out = Vec::new();
    type Attack<'a> = Box<dyn Fn(&mut Pcap) -> trustwatch_testkit::Result<()> + 'a>;
    let cases: Vec<(&str, Attack<'_>)> = vec![
        (
            "failing",
            Box::new(|p| hostile::failing_clients(p, server, 3, &refs, start, span)),
        ),
        (
            "syn",
            Box::new(|p| hostile::syn_flood(p, server, 20, start, span)),
        ),
        (
            "partial",
            Box::new(|p| hostile::partial_records(p, server, 3, 300, start, span)),
        ),
        (
            "giant",
            Box::new(|p| hostile::giant_messages(p, server, 2, 20_000, start, span)),
        ),
        (
            "ooo",
            Box::new(|p| hostile::one_byte_out_of_order(p, server, 2, 40, start, span)),
        ),
        (
            "certs",
            Box::new(|p| {
                let der = &padded.cert.der;
                hostile::distinct_certificates(p, server, 3, der, der.len() / 2, start, span)
            }),
        ),
        (
            "hellos",
            Box::new(|p| hostile::hello_resets(p, server, 6, 2, start, span)),
        ),
        (
            "alerts",
            Box::new(|p| hostile::alert_storm(p, server, 2, 20, start, span)),
        ),
    ];
    for (name, attack) in cases {
        let path = dir.join(format!("gen-{name}.pcap"));
        let mut p = Pcap::create(&path)?;
        attack(&mut p)?;
        p.finish()?;
        out.push((format!("gen-{name}"), path));
    }
    Ok(out)
}

fn main() -> trustwatch_testkit::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = PathBuf::from(
        args.first()
            .ok_or("usage: fuzz_seeds OUT_DIR [PCAPS_DIR]")?,
    );
    let pcaps = args.get(1).map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/validation/pcaps")
    });
    let mut out = Out {
        dir: dir.clone(),
        written: HashMap::new(),
    };
    let tmp = trustwatch_testkit::tempfile::tempdir()?;
    let pki = Pki::new()?;

    let mut captures: Vec<(String, PathBuf)> = generated(tmp.path(), &pki)?;
    let mut listed: Vec<PathBuf> = std::fs::read_dir(&pcaps)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    listed.sort();
    for p in listed {
        let name = p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        captures.push((name, p));
    }

    let mut wire_certs: Vec<Vec<u8>> = Vec::new();
    for (name, path) in &captures {
        let frames = read_capture(path);
        let generated = name.starts_with("gen-");
        // Generated captures are on the watched port; public ones need --any-port (bit 3).
        let config = if generated { 0 } else { 8 };
        if let Some(input) = pipeline_input(&frames, config) {
            out.put("pipeline", name, &input)?;
            let mut tight = input.clone();
            tight[0] |= 16;
            out.put("pipeline", &format!("{name}-tight"), &tight)?;
        }
        for (i, ops) in tls_inputs(&frames).into_iter().enumerate() {
            out.put("tls_stream", &format!("{name}-{i}"), &ops)?;
            wire_certs.extend(find_certs(&ops));
        }
        if let Ok(bytes) = std::fs::read(path) {
            out.put("file_reader", name, &bytes[..bytes.len().min(16 * 1024)])?;
        }
        if let Some(input) = ebpf_input(&frames, 0, &[u8::MAX]) {
            out.put("ebpf_records", &format!("{name}-ring"), &input)?;
        }
        if let Some(input) =
            ebpf_input(&frames, trustwatch_ebpf::flags::VLAN, &[3, 32, 40, u8::MAX])
        {
            out.put("ebpf_records", &format!("{name}-perf-vlan"), &input)?;
        }
    }

    // Certificates: generated ones (ground truth shapes) and those seen on the wire.
    let ca = pki.kubeedge_ca()?;
    let leaf = pki.server_leaf(&ca)?;
    let edge = pki.client_leaf(&ca, "node-1")?;
    let (root, ica, ileaf) = pki.intermediate_chain()?;
    let padded = pki.root_ca("Padded", Some(7), 2_000)?;
    out.put("certs", "kubeedge-ca", &certs_input(&[&ca.cert.der]))?;
    out.put(
        "certs",
        "kubeedge-chain",
        &certs_input(&[&leaf.cert.der, &ca.cert.der]),
    )?;
    out.put("certs", "edge", &certs_input(&[&edge.cert.der]))?;
    out.put(
        "certs",
        "intermediate-chain",
        &certs_input(&[&ileaf.cert.der, &ica.cert.der, &root.cert.der]),
    )?;
    out.put("certs", "padded", &certs_input(&[&padded.cert.der]))?;
    wire_certs.sort();
    wire_certs.dedup();
    for (i, der) in wire_certs.iter().enumerate().take(200) {
        out.put("certs", &format!("wire-{i}"), &certs_input(&[der]))?;
    }

    let mut counts: Vec<_> = out.written.iter().collect();
    counts.sort();
    eprintln!("fuzz seeds in {}: {counts:?}", dir.display());
    Ok(())
}
