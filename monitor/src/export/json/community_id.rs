//! Community ID v1 (corelight/community-id-spec): a flow hash SIEMs share, so a trustwatch record
//! joins Zeek's and Suricata's records of the same connection.
//!
//! `1:` + base64(SHA-1(seed ‖ lower address ‖ higher address ‖ protocol ‖ 0 ‖ their ports)), the
//! endpoints ordered so both directions give the same id; seed 0.

use std::net::{IpAddr, SocketAddr};

use sha1::{Digest, Sha1};

/// IANA protocol number of TCP.
const TCP: u8 = 6;

/// The Community ID of a TCP connection (seed 0).
pub fn tcp(a: SocketAddr, b: SocketAddr) -> String {
    let key = |s: SocketAddr| (ip_bytes(s.ip()), s.port());
    let (lo, hi) = if key(a) <= key(b) { (a, b) } else { (b, a) };
    let mut h = Sha1::new();
    h.update(0u16.to_be_bytes());
    h.update(ip_bytes(lo.ip()));
    h.update(ip_bytes(hi.ip()));
    h.update([TCP, 0]);
    h.update(lo.port().to_be_bytes());
    h.update(hi.port().to_be_bytes());
    format!("1:{}", base64(&h.finalize()))
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// Standard base64 with padding (RFC 4648 §4).
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_vectors_and_direction() {
        // The spec's baseline (tcp.pcap, seed 0): 128.232.110.120:34855 -> 66.35.250.204:80.
        let a: SocketAddr = "128.232.110.120:34855".parse().unwrap();
        let b: SocketAddr = "66.35.250.204:80".parse().unwrap();
        assert_eq!(tcp(a, b), "1:LQU9qZlK+B5F3KDmev6m5PMibrg=");
        assert_eq!(tcp(b, a), tcp(a, b));
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
    }
}
