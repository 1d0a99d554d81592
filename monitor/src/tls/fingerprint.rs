//! Client fingerprints: JA3 (string + MD5) and JA4 (client only; BSD-licensed part of JA4+), and
//! the server's JA3S.
//!
//! Consumes a parsed [`ClientHello`] / [`ServerHello`]; produces fingerprint strings. GREASE values
//! are already removed by the hello parser.

use std::cell::RefCell;

use hashlink::LruCache;
use md5::{Digest, Md5};
use sha2::Sha256;

use super::hello::{ClientHello, ServerHello, is_grease};

const EXT_SNI: u16 = 0x0000;
const EXT_ALPN: u16 = 0x0010;

/// Distinct fingerprint inputs remembered per thread: a fleet of edges sends the same few hellos
/// over and over, so the strings and hashes are computed once per kind of client.
const CACHE_ENTRIES: usize = 1024;

thread_local! {
    static CACHE: RefCell<LruCache<Vec<u16>, [String; 3]>> = RefCell::new(LruCache::new(CACHE_ENTRIES));
}

/// Everything JA3 and JA4 read from a hello, as one key (lists length-prefixed).
fn cache_key(ch: &ClientHello, first_alpn: Option<&[u8]>) -> Vec<u16> {
    let lists: [&[u16]; 4] = [
        &ch.ciphers,
        &ch.extensions,
        &ch.groups,
        &ch.signature_algorithms,
    ];
    let mut key = Vec::with_capacity(16 + lists.iter().map(|l| l.len() + 1).sum::<usize>());
    key.push(ch.legacy_version.0);
    key.push(u16::from(ch.sslv2));
    key.push(ch.supported_versions.len() as u16);
    key.extend(ch.supported_versions.iter().map(|v| v.0));
    for list in lists {
        key.push(list.len() as u16);
        key.extend_from_slice(list);
    }
    key.push(ch.ec_point_formats.len() as u16);
    key.extend(ch.ec_point_formats.iter().map(|&f| u16::from(f)));
    let alpn = first_alpn.unwrap_or_default();
    key.push(alpn.len() as u16);
    key.extend(alpn.iter().map(|&b| u16::from(b)));
    key
}

/// Fills `ja3`, `ja3_md5` and `ja4` of a freshly parsed hello.
pub(crate) fn fill(ch: &mut ClientHello) {
    let first_alpn = ch.first_alpn.as_deref();
    let key = cache_key(ch, first_alpn);
    let cached = CACHE.with_borrow_mut(|c| c.get(&key).cloned());
    let [ja3, ja3_md5, ja4] = cached.unwrap_or_else(|| {
        let ja3 = ja3_string(ch);
        let ja3_md5 = md5_hex(&ja3);
        let ja4 = ja4_with_alpn(ch, first_alpn);
        let value = [ja3, ja3_md5, ja4];
        CACHE.with_borrow_mut(|c| c.insert(key, value.clone()));
        value
    });
    ch.ja3 = ja3;
    ch.ja3_md5 = ja3_md5;
    ch.ja4 = ja4;
}

/// Appends `v` in decimal (no `fmt` machinery: this runs for every ClientHello).
fn push_dec(out: &mut String, v: u16) {
    let mut buf = [0u8; 5];
    let mut i = buf.len();
    let mut n = v;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend(buf[i..].iter().map(|&b| char::from(b)));
}

/// Appends `v` as four lower-case hex digits.
fn push_hex4(out: &mut String, v: u16) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for shift in [12, 8, 4, 0] {
        out.push(char::from(HEX[usize::from((v >> shift) & 0xf)]));
    }
}

fn join(out: &mut String, items: impl IntoIterator<Item = u16>, sep: char) {
    for (i, v) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(sep);
        }
        push_dec(out, v);
    }
}

fn md5_hex(s: &str) -> String {
    hex::encode(Md5::digest(s.as_bytes()))
}

/// JA3 string: `SSLVersion,Ciphers,Extensions,EllipticCurves,EllipticCurvePointFormats`, decimal
/// values joined by `-`, the version being the legacy ClientHello version.
pub fn ja3_string(ch: &ClientHello) -> String {
    let mut s = String::with_capacity(256);
    push_dec(&mut s, ch.legacy_version.0);
    s.push(',');
    join(&mut s, ch.ciphers.iter().copied(), '-');
    s.push(',');
    join(
        &mut s,
        ch.extensions.iter().copied().filter(|&e| !is_grease(e)),
        '-',
    );
    s.push(',');
    join(&mut s, ch.groups.iter().copied(), '-');
    s.push(',');
    join(
        &mut s,
        ch.ec_point_formats.iter().map(|&p| u16::from(p)),
        '-',
    );
    s
}

/// JA3S string (`SSLVersion,Cipher,Extensions`) and its MD5.
pub fn ja3s(sh: &ServerHello) -> (String, String) {
    let mut s = String::with_capacity(64);
    push_dec(&mut s, sh.legacy_version.0);
    s.push(',');
    push_dec(&mut s, sh.cipher);
    s.push(',');
    join(
        &mut s,
        sh.extensions.iter().copied().filter(|&e| !is_grease(e)),
        '-',
    );
    let md5 = md5_hex(&s);
    (s, md5)
}

/// JA4 of a ClientHello over TCP, taking the first ALPN value from `ch.alpn`.
pub fn ja4(ch: &ClientHello) -> String {
    ja4_with_alpn(ch, ch.alpn.first().map(String::as_bytes))
}

fn ja4_version(ch: &ClientHello) -> &'static str {
    let v = ch
        .supported_versions
        .iter()
        .map(|v| v.0)
        .max()
        .unwrap_or(ch.legacy_version.0);
    let v = if ch.sslv2 && ch.supported_versions.is_empty() {
        0x0002
    } else {
        v
    };
    match v {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        0x0002 | 0x0200 => "s2",
        0x0100 => "s1",
        _ => "00",
    }
}

/// The two ALPN characters of JA4_a: first and last character of the first ALPN value when both
/// are ASCII alphanumeric, else the first and last hex digit of the value; `00` without ALPN.
fn ja4_alpn(first: Option<&[u8]>) -> [char; 2] {
    let Some(alpn) = first.filter(|a| !a.is_empty()) else {
        return ['0', '0'];
    };
    let (a, z) = (alpn[0], alpn[alpn.len() - 1]);
    if a.is_ascii_alphanumeric() && z.is_ascii_alphanumeric() {
        [char::from(a), char::from(z)]
    } else {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        [
            char::from(HEX[usize::from(a >> 4)]),
            char::from(HEX[usize::from(z & 0xf)]),
        ]
    }
}

fn sha256_12(s: &str) -> String {
    if s.is_empty() {
        return "000000000000".into();
    }
    let mut h = hex::encode(Sha256::digest(s.as_bytes()));
    h.truncate(12);
    h
}

fn hex4_list(items: impl IntoIterator<Item = u16>) -> String {
    let mut s = String::with_capacity(256);
    for (i, v) in items.into_iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        push_hex4(&mut s, v);
    }
    s
}

/// JA4 (FoxIO JA4 spec, client part) with an explicit first ALPN value.
pub fn ja4_with_alpn(ch: &ClientHello, first_alpn: Option<&[u8]>) -> String {
    let exts: Vec<u16> = ch
        .extensions
        .iter()
        .copied()
        .filter(|&e| !is_grease(e))
        .collect();
    let sni = if exts.contains(&EXT_SNI) { 'd' } else { 'i' };
    let [a0, a1] = ja4_alpn(first_alpn);
    let mut ciphers = ch.ciphers.clone();
    ciphers.sort_unstable();
    let mut sorted_exts: Vec<u16> = exts
        .iter()
        .copied()
        .filter(|&e| e != EXT_SNI && e != EXT_ALPN)
        .collect();
    sorted_exts.sort_unstable();
    let mut c = hex4_list(sorted_exts);
    if !ch.signature_algorithms.is_empty() {
        c.push('_');
        c.push_str(&hex4_list(ch.signature_algorithms.iter().copied()));
    }
    format!(
        "t{}{}{:02}{:02}{}{}_{}_{}",
        ja4_version(ch),
        sni,
        ch.ciphers.len().min(99),
        exts.len().min(99),
        a0,
        a1,
        sha256_12(&hex4_list(ciphers)),
        sha256_12(&c),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::Version;

    #[test]
    fn alpn_characters() {
        assert_eq!(ja4_alpn(None), ['0', '0']);
        assert_eq!(ja4_alpn(Some(b"")), ['0', '0']);
        assert_eq!(ja4_alpn(Some(b"h2")), ['h', '2']);
        assert_eq!(ja4_alpn(Some(b"http/1.1")), ['h', '1']);
        assert_eq!(ja4_alpn(Some(b"x")), ['x', 'x']);
        assert_eq!(ja4_alpn(Some(&[0xab, 0xcd])), ['a', 'd']);
        assert_eq!(ja4_alpn(Some(b"h/")), ['6', 'f']);
    }

    #[test]
    fn empty_hello_hashes_are_zero() {
        let ch = ClientHello {
            legacy_version: Version::SSL3,
            ..ClientHello::default()
        };
        assert_eq!(ja4(&ch), "ts3i000000_000000000000_000000000000");
        assert_eq!(ja3_string(&ch), "768,,,,");
    }
}
