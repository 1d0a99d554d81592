//! Community ID v1 (corelight/community-id-spec): a flow hash SIEMs share, so a trustwatch record
//! joins Zeek's and Suricata's records of the same connection.
//!
//! `1:` + base64(SHA-1(seed ‖ lower address ‖ higher address ‖ protocol ‖ 0 ‖ their ports)), the
//! endpoints ordered so both directions give the same id; seed 0.

use std::net::{IpAddr, SocketAddr};

use sha1::{Digest, Sha1};

/// IANA protocol number of TCP.
const TCP: u8 = 6;

/// The Community ID of a TCP connection (seed 0). No allocation: this runs for every record.
pub fn tcp(a: SocketAddr, b: SocketAddr) -> CommunityId {
    let (a_ip, b_ip) = (ip_bytes(a.ip()), ip_bytes(b.ip()));
    let (a_key, b_key) = ((&a_ip.0[..a_ip.1], a.port()), (&b_ip.0[..b_ip.1], b.port()));
    let (lo, hi) = if a_key <= b_key {
        (a_key, b_key)
    } else {
        (b_key, a_key)
    };
    // seed (2) + two addresses (up to 16 each) + protocol and padding (2) + two ports (4).
    let mut input = [0u8; 40];
    let mut n = 2;
    for ip in [lo.0, hi.0] {
        input[n..n + ip.len()].copy_from_slice(ip);
        n += ip.len();
    }
    input[n] = TCP;
    n += 2;
    for port in [lo.1, hi.1] {
        input[n..n + 2].copy_from_slice(&port.to_be_bytes());
        n += 2;
    }
    let digest: [u8; 20] = Sha1::digest(&input[..n]).into();
    let mut id = [0u8; ID_LEN];
    id[..2].copy_from_slice(b"1:");
    base64(&digest, &mut id[2..]);
    CommunityId(id)
}

/// `1:` and 28 characters of base64.
const ID_LEN: usize = 30;

/// A Community ID, `1:…=`.
pub struct CommunityId([u8; ID_LEN]);

impl CommunityId {
    pub fn as_str(&self) -> &str {
        // The prefix and base64 are ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// An address's bytes as the spec hashes them, inline: the first 4 for IPv4, all 16 for IPv6.
fn ip_bytes(ip: IpAddr) -> ([u8; 16], usize) {
    match ip {
        IpAddr::V4(v4) => {
            let mut bytes = [0u8; 16];
            bytes[..4].copy_from_slice(&v4.octets());
            (bytes, 4)
        }
        IpAddr::V6(v6) => (v6.octets(), 16),
    }
}

/// Standard base64 with padding (RFC 4648 §4) of `data` into `out`, which holds exactly
/// `4 * ceil(len / 3)` bytes.
fn base64(data: &[u8], out: &mut [u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (chunk, dst) in data.chunks(3).zip(out.chunks_exact_mut(4)) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for (i, d) in dst.iter_mut().enumerate() {
            *d = if i <= chunk.len() {
                ALPHABET[(n >> (18 - 6 * i) & 63) as usize]
            } else {
                b'='
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_vectors_and_direction() {
        // The spec's baseline (tcp.pcap, seed 0): 128.232.110.120:34855 -> 66.35.250.204:80.
        let a: SocketAddr = "128.232.110.120:34855".parse().unwrap();
        let b: SocketAddr = "66.35.250.204:80".parse().unwrap();
        assert_eq!(tcp(a, b).as_str(), "1:LQU9qZlK+B5F3KDmev6m5PMibrg=");
        assert_eq!(tcp(b, a).as_str(), tcp(a, b).as_str());
        // IPv6, as PyPI communityid computes it: `community-id tcp fe80::1 2001:db8::7 10000 43211`.
        let a: SocketAddr = "[fe80::1]:10000".parse().unwrap();
        let b: SocketAddr = "[2001:db8::7]:43211".parse().unwrap();
        assert_eq!(tcp(a, b).as_str(), "1:c0BhC2Kz8zIt501cuOOW7wjzXcg=");
        assert_eq!(tcp(b, a).as_str(), tcp(a, b).as_str());
        for (data, want) in [(&b"f"[..], "Zg=="), (b"fo", "Zm8="), (b"foo", "Zm9v")] {
            let mut out = [0u8; 4];
            base64(data, &mut out);
            assert_eq!(out, want.as_bytes());
        }
    }
}
