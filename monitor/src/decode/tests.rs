use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::Bytes;
use etherparse::PacketBuilder;

use super::*;
use crate::capture::Packet;

/// The decoder on a whole packet (the tests build owned packets).
fn decode(p: &Packet) -> Result<TcpSegment<'_>, Skip> {
    super::decode(&p.frame())
}

const PAYLOAD: &[u8] = b"\x16\x03\x01\x00\x05hello";
const V4_SRC: [u8; 4] = [10, 0, 0, 1];
const V4_DST: [u8; 4] = [10, 0, 0, 2];
const V6_SRC: [u8; 16] = [0x20, 0x01, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const V6_DST: [u8; 16] = [0x20, 0x01, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

fn pkt(linktype: LinkType, data: Vec<u8>) -> Packet {
    Packet {
        ts: Timestamp::from_micros(42),
        linktype,
        data: Bytes::from(data),
    }
}

/// IPv4 + TCP (seq 1000, ack 2000, PSH/ACK) carrying `payload`.
fn ip4_tcp(payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(V4_SRC, V4_DST, 64)
        .tcp(40000, 10000, 1000, 1024)
        .ack(2000)
        .psh()
        .write_to_vec(&mut v, payload)
        .unwrap();
    v
}

fn ip6_tcp(payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv6(V6_SRC, V6_DST, 64)
        .tcp(40000, 443, 7, 1024)
        .syn()
        .write_to_vec(&mut v, payload)
        .unwrap();
    v
}

fn ether(ether_type: u16, inner: &[u8]) -> Vec<u8> {
    let mut v = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    v.extend_from_slice(&ether_type.to_be_bytes());
    v.extend_from_slice(inner);
    v
}

/// A VLAN tag (TPID supplied by the caller's EtherType) followed by `ether_type`.
fn vlan_tag(id: u16, ether_type: u16, inner: &[u8]) -> Vec<u8> {
    let mut v = id.to_be_bytes().to_vec();
    v.extend_from_slice(&ether_type.to_be_bytes());
    v.extend_from_slice(inner);
    v
}

fn decode_ok(p: &Packet) -> TcpSegment<'_> {
    let seg = decode(p).unwrap_or_else(|e| panic!("{e:?}"));
    // Zero copy: the payload lies inside the packet's buffer.
    if !seg.payload.is_empty() {
        let start = p.data.as_ptr() as usize;
        let at = seg.payload.as_ptr() as usize;
        assert!(at >= start && at + seg.payload.len() <= start + p.data.len());
    }
    seg
}

fn assert_v4(seg: &TcpSegment) {
    assert_eq!(seg.src, IpAddr::V4(Ipv4Addr::from(V4_SRC)));
    assert_eq!(seg.dst, IpAddr::V4(Ipv4Addr::from(V4_DST)));
    assert_eq!(
        (seg.sport, seg.dport, seg.seq, seg.ack),
        (40000, 10000, 1000, 2000)
    );
    assert_eq!(
        seg.flags,
        TcpFlags {
            syn: false,
            ack: true,
            fin: false,
            rst: false
        }
    );
    assert_eq!(seg.payload, PAYLOAD);
    assert_eq!(seg.ts, Timestamp::from_micros(42));
}

fn assert_v6(seg: &TcpSegment) {
    assert_eq!(seg.src, IpAddr::V6(Ipv6Addr::from(V6_SRC)));
    assert_eq!(seg.dst, IpAddr::V6(Ipv6Addr::from(V6_DST)));
    assert_eq!((seg.sport, seg.dport, seg.seq), (40000, 443, 7));
    assert!(seg.flags.syn && !seg.flags.ack);
    assert_eq!(seg.payload, PAYLOAD);
}

#[test]
fn ethernet_ipv4_and_ipv6() {
    let p = pkt(LinkType::Ethernet, ether(0x0800, &ip4_tcp(PAYLOAD)));
    let seg = decode_ok(&p);
    assert_v4(&seg);
    assert_eq!(seg.vlan, None);
    assert_v6(&decode_ok(&pkt(
        LinkType::Ethernet,
        ether(0x86dd, &ip6_tcp(PAYLOAD)),
    )));
}

#[test]
fn ethernet_padding_and_fcs_are_not_payload() {
    // 14 + 20 + 20 + 2 = 56 bytes: padded to 60, plus a 4-byte FCS.
    let mut frame = ether(0x0800, &ip4_tcp(b"ab"));
    frame.extend_from_slice(&[0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef]);
    let p = pkt(LinkType::Ethernet, frame);
    let seg = decode_ok(&p);
    assert_eq!(seg.payload, b"ab");
    // Same for IPv6 (payload length bounds it).
    let mut frame = ether(0x86dd, &ip6_tcp(b""));
    frame.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    assert!(
        decode_ok(&pkt(LinkType::Ethernet, frame))
            .payload
            .is_empty()
    );
}

#[test]
fn vlan_tags_record_the_outer_id() {
    let ip = ip4_tcp(PAYLOAD);
    let single = ether(0x8100, &vlan_tag(50, 0x0800, &ip));
    assert_eq!(decode_ok(&pkt(LinkType::Ethernet, single)).vlan, Some(50));
    for outer_tpid in [0x88a8, 0x9100, 0x8100] {
        let qinq = ether(
            outer_tpid,
            &vlan_tag(3704, 0x8100, &vlan_tag(2474, 0x0800, &ip)),
        );
        let p = pkt(LinkType::Ethernet, qinq);
        let seg = decode_ok(&p);
        assert_v4(&seg);
        assert_eq!(seg.vlan, Some(3704));
    }
    let triple = ether(
        0x88a8,
        &vlan_tag(
            7,
            0x8100,
            &vlan_tag(8, 0x8100, &vlan_tag(9, 0x86dd, &ip6_tcp(PAYLOAD))),
        ),
    );
    let p = pkt(LinkType::Ethernet, triple);
    let seg = decode_ok(&p);
    assert_v6(&seg);
    assert_eq!(seg.vlan, Some(7));
}

fn pppoe(proto: &[u8], inner: &[u8]) -> Vec<u8> {
    let len = u16::try_from(proto.len() + inner.len()).unwrap();
    let mut v = vec![0x11, 0x00, 0x12, 0x34];
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(proto);
    v.extend_from_slice(inner);
    v
}

#[test]
fn pppoe_session_over_qinq() {
    let inner = pppoe(&[0x00, 0x21], &ip4_tcp(PAYLOAD));
    let frame = ether(
        0x88a8,
        &vlan_tag(3704, 0x8100, &vlan_tag(2474, 0x8864, &inner)),
    );
    let p = pkt(LinkType::Ethernet, frame);
    let seg = decode_ok(&p);
    assert_v4(&seg);
    assert_eq!(seg.vlan, Some(3704));
    // IPv6 inside PPPoE, no VLAN, with trailing padding beyond the PPPoE length.
    let mut frame = ether(0x8864, &pppoe(&[0x00, 0x57], &ip6_tcp(PAYLOAD)));
    frame.extend_from_slice(&[0; 6]);
    assert_v6(&decode_ok(&pkt(LinkType::Ethernet, frame)));
    // PPP protocol-field compression (one-byte 0x21).
    assert_v4(&decode_ok(&pkt(
        LinkType::Ethernet,
        ether(0x8864, &pppoe(&[0x21], &ip4_tcp(PAYLOAD))),
    )));
    // LCP (0xc021) is not IP; a bad version/type is malformed; a cut header too.
    assert_eq!(
        decode(&pkt(
            LinkType::Ethernet,
            ether(0x8864, &pppoe(&[0xc0, 0x21], &[1, 2, 3]))
        ))
        .unwrap_err(),
        Skip::NotTcp
    );
    let mut bad = pppoe(&[0x00, 0x21], &ip4_tcp(PAYLOAD));
    bad[0] = 0x22;
    assert_eq!(
        decode(&pkt(LinkType::Ethernet, ether(0x8864, &bad))).unwrap_err(),
        Skip::Malformed
    );
    assert_eq!(
        decode(&pkt(LinkType::Ethernet, ether(0x8864, &[0x11, 0]))).unwrap_err(),
        Skip::Malformed
    );
}

#[test]
fn linux_cooked_v1_and_v2() {
    let mut sll = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0];
    sll.extend_from_slice(&0x86ddu16.to_be_bytes());
    sll.extend_from_slice(&ip6_tcp(PAYLOAD));
    assert_v6(&decode_ok(&pkt(LinkType::LinuxSll, sll)));

    let mut sll2 = 0x0800u16.to_be_bytes().to_vec();
    sll2.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 1, 4, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
    assert_eq!(sll2.len(), 20);
    sll2.extend_from_slice(&ip4_tcp(PAYLOAD));
    assert_v4(&decode_ok(&pkt(LinkType::LinuxSll2, sll2)));

    // A tagged frame seen on the `any` device.
    let mut sll2 = 0x8100u16.to_be_bytes().to_vec();
    sll2.extend_from_slice(&[0; 18]);
    sll2.extend_from_slice(&vlan_tag(12, 0x0800, &ip4_tcp(PAYLOAD)));
    assert_eq!(decode_ok(&pkt(LinkType::LinuxSll2, sll2)).vlan, Some(12));

    assert_eq!(
        decode(&pkt(LinkType::LinuxSll, vec![0; 15])).unwrap_err(),
        Skip::Malformed
    );
    assert_eq!(
        decode(&pkt(LinkType::LinuxSll2, vec![0x08, 0, 0])).unwrap_err(),
        Skip::Malformed
    );
    // ARP over SLL2 is not TCP.
    let mut arp = 0x0806u16.to_be_bytes().to_vec();
    arp.extend_from_slice(&[0; 18 + 28]);
    assert!(decode(&pkt(LinkType::LinuxSll2, arp)).is_err());
}

#[test]
fn bsd_loopback_both_byte_orders() {
    let with = |family: [u8; 4], ip: Vec<u8>| {
        let mut v = family.to_vec();
        v.extend_from_slice(&ip);
        v
    };
    assert_v4(&decode_ok(&pkt(
        LinkType::Null,
        with(2u32.to_le_bytes(), ip4_tcp(PAYLOAD)),
    )));
    assert_v4(&decode_ok(&pkt(
        LinkType::Null,
        with(2u32.to_be_bytes(), ip4_tcp(PAYLOAD)),
    )));
    for fam in [24u32, 28, 30] {
        assert_v6(&decode_ok(&pkt(
            LinkType::Null,
            with(fam.to_le_bytes(), ip6_tcp(PAYLOAD)),
        )));
        assert_v6(&decode_ok(&pkt(
            LinkType::Loop,
            with(fam.to_be_bytes(), ip6_tcp(PAYLOAD)),
        )));
    }
    assert_v4(&decode_ok(&pkt(
        LinkType::Loop,
        with(2u32.to_be_bytes(), ip4_tcp(PAYLOAD)),
    )));
    // AF_APPLETALK (16) is not IP.
    assert_eq!(
        decode(&pkt(
            LinkType::Null,
            with(16u32.to_le_bytes(), ip4_tcp(PAYLOAD))
        ))
        .unwrap_err(),
        Skip::NotTcp
    );
    assert_eq!(
        decode(&pkt(LinkType::Null, vec![2, 0])).unwrap_err(),
        Skip::Malformed
    );
}

#[test]
fn raw_ip_link_types() {
    for lt in [LinkType::Raw, LinkType::Ipv4] {
        assert_v4(&decode_ok(&pkt(lt, ip4_tcp(PAYLOAD))));
    }
    for lt in [LinkType::Raw, LinkType::Ipv6] {
        assert_v6(&decode_ok(&pkt(lt, ip6_tcp(PAYLOAD))));
    }
    assert_eq!(
        decode(&pkt(LinkType::Raw, vec![0x50; 40])).unwrap_err(),
        Skip::Malformed
    );
    assert_eq!(
        decode(&pkt(LinkType::Raw, Vec::new())).unwrap_err(),
        Skip::Malformed
    );
}

/// Inserts IPv4 options after the 20-byte header, fixing IHL and total length.
fn with_ipv4_options(mut ip: Vec<u8>, options: &[u8]) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    ip[0] = 0x40 | u8::try_from((20 + options.len()) / 4).unwrap();
    let total = u16::try_from(ip.len() + options.len()).unwrap();
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.splice(20..20, options.iter().copied());
    ip
}

#[test]
fn ipv4_options() {
    // Router alert (4 bytes) + NOPs + EOL (8 bytes of options in all).
    let ip = with_ipv4_options(ip4_tcp(PAYLOAD), &[0x94, 0x04, 0, 0, 1, 1, 1, 0]);
    assert_v4(&decode_ok(&pkt(LinkType::Raw, ip)));
}

/// Inserts an IPv6 extension header (`next` = the protocol it carries is set from the IPv6
/// header) right after the fixed header; `kind` becomes the IPv6 header's next header.
fn with_ipv6_ext(mut ip: Vec<u8>, kind: u8, body: &[u8]) -> Vec<u8> {
    // body excludes the first two bytes (next header, length); total must be a multiple of 8.
    assert_eq!((body.len() + 2) % 8, 0);
    let next = ip[6];
    ip[6] = kind;
    let mut ext = vec![next, u8::try_from((body.len() + 2) / 8 - 1).unwrap()];
    ext.extend_from_slice(body);
    let plen = u16::from_be_bytes([ip[4], ip[5]]) + u16::try_from(ext.len()).unwrap();
    ip[4..6].copy_from_slice(&plen.to_be_bytes());
    ip.splice(40..40, ext);
    ip
}

#[test]
fn ipv6_extension_headers() {
    // Destination options, then routing (type 0 segments left 0 is fine to skip), then hop-by-hop
    // first (inserted last, so it ends up directly after the fixed header).
    let ip = ip6_tcp(PAYLOAD);
    let ip = with_ipv6_ext(ip, 60, &[1, 4, 0, 0, 0, 0]);
    let ip = with_ipv6_ext(ip, 43, &[4, 0, 0, 0, 0, 0]);
    let ip = with_ipv6_ext(ip, 0, &[1, 4, 0, 0, 0, 0]);
    assert_v6(&decode_ok(&pkt(LinkType::Raw, ip)));
    // No Next Header (59) is not TCP.
    let mut none = ip6_tcp(b"");
    none[6] = 59;
    assert_eq!(decode(&pkt(LinkType::Raw, none)).unwrap_err(), Skip::NotTcp);
}

#[test]
fn fragments_are_skipped() {
    // IPv4: more-fragments set, and a non-zero offset.
    let mut mf = ip4_tcp(PAYLOAD);
    mf[6] = 0x20;
    assert_eq!(decode(&pkt(LinkType::Raw, mf)).unwrap_err(), Skip::Fragment);
    let mut off = ip4_tcp(PAYLOAD);
    off[7] = 0x10;
    assert_eq!(
        decode(&pkt(LinkType::Ethernet, ether(0x0800, &off))).unwrap_err(),
        Skip::Fragment
    );
    // IPv6 Fragment header (44): offset 0 with M set; and offset 8 without M.
    let frag = with_ipv6_ext(ip6_tcp(PAYLOAD), 44, &[0x00, 0x01, 0, 0, 0, 9]);
    assert_eq!(
        decode(&pkt(LinkType::Raw, frag)).unwrap_err(),
        Skip::Fragment
    );
    let frag = with_ipv6_ext(ip6_tcp(PAYLOAD), 44, &[0x00, 0x08, 0, 0, 0, 9]);
    assert_eq!(
        decode(&pkt(LinkType::Raw, frag)).unwrap_err(),
        Skip::Fragment
    );
    // An atomic fragment (offset 0, no M; RFC 6946) is a whole packet and is decoded.
    let atomic = with_ipv6_ext(ip6_tcp(PAYLOAD), 44, &[0x00, 0x00, 0, 0, 0, 9]);
    assert_v6(&decode_ok(&pkt(LinkType::Raw, atomic)));
}

#[test]
fn other_protocols_are_not_tcp() {
    let mut udp = Vec::new();
    PacketBuilder::ipv4(V4_SRC, V4_DST, 64)
        .udp(5353, 53)
        .write_to_vec(&mut udp, b"q")
        .unwrap();
    assert_eq!(decode(&pkt(LinkType::Raw, udp)).unwrap_err(), Skip::NotTcp);
    let mut icmp = Vec::new();
    PacketBuilder::ipv6(V6_SRC, V6_DST, 64)
        .icmpv6_echo_request(1, 2)
        .write_to_vec(&mut icmp, b"")
        .unwrap();
    assert_eq!(decode(&pkt(LinkType::Raw, icmp)).unwrap_err(), Skip::NotTcp);
    let mut arp = ether(0x0806, &[0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&[0; 20]);
    assert_eq!(
        decode(&pkt(LinkType::Ethernet, arp)).unwrap_err(),
        Skip::NotTcp
    );
    // LLDP: an EtherType nobody here decodes.
    assert_eq!(
        decode(&pkt(LinkType::Ethernet, ether(0x88cc, &[0; 30]))).unwrap_err(),
        Skip::NotTcp
    );
}

#[test]
fn truncated_packets() {
    let frame = ether(0x0800, &ip4_tcp(PAYLOAD));
    // Snap length inside the payload: the captured part is delivered.
    let cut = frame[..frame.len() - 4].to_vec();
    let p = pkt(LinkType::Ethernet, cut);
    let seg = decode_ok(&p);
    assert_eq!(seg.payload, &PAYLOAD[..PAYLOAD.len() - 4]);
    // Inside the TCP header, inside the IP header, inside the Ethernet header.
    for len in [14 + 20 + 19, 14 + 20, 14 + 19, 14 + 1, 13, 0] {
        let cut = frame[..len].to_vec();
        assert_eq!(
            decode(&pkt(LinkType::Ethernet, cut)).unwrap_err(),
            Skip::Malformed,
            "cut at {len}"
        );
    }
    // Inside a VLAN tag.
    let tagged = ether(0x8100, &[0, 5]);
    assert_eq!(
        decode(&pkt(LinkType::Ethernet, tagged)).unwrap_err(),
        Skip::Malformed
    );
    // A TCP data offset below 5 is corrupt.
    let mut bad = ip4_tcp(PAYLOAD);
    bad[20 + 12] = 0x40;
    assert_eq!(
        decode(&pkt(LinkType::Raw, bad)).unwrap_err(),
        Skip::Malformed
    );
}

#[test]
fn every_prefix_of_every_link_type_is_safe() {
    let frames = [
        (
            LinkType::Ethernet,
            ether(
                0x88a8,
                &vlan_tag(
                    1,
                    0x8100,
                    &vlan_tag(2, 0x8864, &pppoe(&[0, 0x57], &ip6_tcp(PAYLOAD))),
                ),
            ),
        ),
        (LinkType::LinuxSll2, {
            let mut v = 0x86ddu16.to_be_bytes().to_vec();
            v.extend_from_slice(&[0; 18]);
            v.extend_from_slice(&with_ipv6_ext(ip6_tcp(PAYLOAD), 0, &[1, 4, 0, 0, 0, 0]));
            v
        }),
        (LinkType::Null, {
            let mut v = 2u32.to_le_bytes().to_vec();
            v.extend_from_slice(&with_ipv4_options(ip4_tcp(PAYLOAD), &[1, 1, 1, 0]));
            v
        }),
    ];
    for (lt, frame) in frames {
        decode_ok(&pkt(lt, frame.clone()));
        for len in 0..frame.len() {
            let _ = decode(&pkt(lt, frame[..len].to_vec()));
        }
        // Corrupt every byte in turn.
        for i in 0..frame.len() {
            let mut f = frame.clone();
            f[i] ^= 0xff;
            let _ = decode(&pkt(lt, f));
        }
    }
}

/// Where the fast path answers, it answers as the general path does (same fields, same payload
/// bytes at the same place). Returns whether it answered.
fn fast_agrees(p: &Packet) -> bool {
    let Some(f) = fast::decode(p.linktype, &p.data, p.ts) else {
        return false;
    };
    let g = decode_general(&p.frame())
        .unwrap_or_else(|e| panic!("fast path decoded a frame the general path skips: {e:?}"));
    assert_eq!(
        (
            f.src, f.dst, f.sport, f.dport, f.seq, f.ack, f.flags, f.vlan
        ),
        (
            g.src, g.dst, g.sport, g.dport, g.seq, g.ack, g.flags, g.vlan
        )
    );
    assert_eq!(f.payload, g.payload);
    assert!(f.payload.is_empty() || std::ptr::eq(f.payload.as_ptr(), g.payload.as_ptr()));
    true
}

#[test]
fn fast_path_agrees_with_the_general_path() {
    let ip4 = ip4_tcp(PAYLOAD);
    let ip6 = ip6_tcp(PAYLOAD);
    let mut tso = ip4_tcp(PAYLOAD);
    tso[2..4].copy_from_slice(&[0, 0]); // total length 0, as TSO captures write it
    let mut jumbo = ip6_tcp(PAYLOAD);
    jumbo[4..6].copy_from_slice(&[0, 0]);
    let mut padded = ether(0x0800, &ip4_tcp(b"ab"));
    padded.extend_from_slice(&[0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef]);
    let mut sll = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x86, 0xdd];
    sll.extend_from_slice(&ip6);
    let mut sll2 = 0x0800u16.to_be_bytes().to_vec();
    sll2.extend_from_slice(&[0; 18]);
    sll2.extend_from_slice(&ip4);
    let mut null = 2u32.to_le_bytes().to_vec();
    null.extend_from_slice(&ip4);
    let frames = [
        (LinkType::Ethernet, ether(0x0800, &ip4)),
        (LinkType::Ethernet, ether(0x86dd, &ip6)),
        (LinkType::Ethernet, ether(0x0800, &ip6)),
        (
            LinkType::Ethernet,
            ether(0x8100, &vlan_tag(50, 0x0800, &ip4)),
        ),
        (
            LinkType::Ethernet,
            ether(0x88a8, &vlan_tag(0xf07, 0x86dd, &ip6)),
        ),
        (LinkType::Ethernet, ether(0x0800, &tso)),
        (LinkType::Ethernet, padded),
        (LinkType::Raw, with_ipv4_options(ip4.clone(), &[1, 1, 1, 0])),
        (LinkType::Raw, jumbo),
        (LinkType::Ipv6, ip6.clone()),
        (LinkType::LinuxSll, sll),
        (LinkType::LinuxSll2, sll2),
        (LinkType::Null, null),
    ];
    for (lt, frame) in frames {
        assert!(fast_agrees(&pkt(lt, frame.clone())), "{lt:?} {frame:02x?}");
        for len in 0..frame.len() {
            fast_agrees(&pkt(lt, frame[..len].to_vec()));
        }
        // Every single-bit and whole-byte corruption.
        for i in 0..frame.len() {
            for mask in [1u8, 2, 4, 8, 0x10, 0x20, 0x40, 0x80, 0xff] {
                let mut f = frame.clone();
                f[i] ^= mask;
                fast_agrees(&pkt(lt, f));
            }
        }
    }
}

#[cfg(test)]
mod corpus {
    use std::path::Path;

    use super::*;
    use crate::capture::file::FileSource;

    const PCAPS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/validation/pcaps");

    fn tshark_tcp_count(path: &Path) -> Option<usize> {
        let out = std::process::Command::new("tshark")
            .arg("-r")
            .arg(path)
            .args([
                "-Y",
                "tcp and ((ip and ip.flags.mf == 0 and ip.frag_offset == 0) or (ipv6 and not ip))",
                "-T",
                "fields",
                "-e",
                "frame.number",
            ])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).lines().count())
    }

    /// What the tests below look at of a decoded segment (owned: the packets are not kept).
    struct Seg {
        vlan: Option<u16>,
        sport: u16,
        dport: u16,
        payload: Vec<u8>,
    }

    fn decode_file(path: &Path) -> Vec<Seg> {
        let mut src = FileSource::open(path).unwrap();
        let mut segs = Vec::new();
        while let Some(p) = src.next_packet().unwrap() {
            segs.extend(decode(&p).ok().map(|s| Seg {
                vlan: s.vlan,
                sport: s.sport,
                dport: s.dport,
                payload: s.payload.to_vec(),
            }));
        }
        segs
    }

    #[test]
    fn fast_path_agrees_on_every_corpus_packet() {
        let (mut fast, mut all) = (0, 0);
        for f in std::fs::read_dir(PCAPS).unwrap() {
            let mut src = FileSource::open(f.unwrap().path()).unwrap();
            while let Some(p) = src.next_packet().unwrap() {
                fast += usize::from(fast_agrees(&p));
                all += 1;
            }
        }
        // Most of the corpus is plain Ethernet/IP/TCP.
        assert!(fast * 2 > all, "{fast} of {all}");
    }

    #[test]
    fn pppoe_over_qinq_capture() {
        let segs = decode_file(&Path::new(PCAPS).join("zeek-pppoe-over-qinq.pcap"));
        assert!(!segs.is_empty());
        assert!(segs.iter().all(|s| s.vlan == Some(3704)), "outer tag");
        assert!(segs.iter().any(|s| s.sport == 443 || s.dport == 443));
        assert!(
            segs.iter().any(|s| s.payload.first() == Some(&0x16)),
            "a TLS handshake record"
        );
    }

    #[test]
    fn tcp_segment_counts_match_tshark() {
        let mut files: Vec<_> = std::fs::read_dir(PCAPS)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files {
            let segs = decode_file(&f);
            let Some(expected) = tshark_tcp_count(&f) else {
                return;
            };
            assert_eq!(segs.len(), expected, "{}", f.display());
        }
    }
}
