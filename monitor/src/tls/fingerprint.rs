//! Client fingerprints: JA3 (string + MD5) and JA4 (client only; BSD-licensed part of JA4+), and
//! the server's JA3S.
//!
//! Consumes a parsed [`ClientHello`] / [`ServerHello`]; produces fingerprint strings. GREASE values
//! are already removed by the hello parser.

use std::cell::RefCell;
use std::sync::Arc;

use hashlink::LruCache;
use md5::{Digest, Md5};
use sha2::Sha256;

use super::hello::{ClientHello, ServerHello, is_grease};

const EXT_SNI: u16 = 0x0000;
const EXT_ALPN: u16 = 0x0010;

/// Distinct fingerprint inputs remembered per thread: a fleet of edges sends the same few hellos
/// over and over, so the strings and hashes are computed once per kind of client.
const CACHE_ENTRIES: usize = 1024;

/// A client hello's fingerprints. Cache-line aligned, so that behind an `Arc` the reference
/// counts have a line of their own: with `--threads`, a pipeline thread counts the references
/// while the reading thread reads the strings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[repr(align(64))]
pub struct Fingerprints {
    /// JA3 string: `version,ciphers,extensions,groups,point_formats`.
    pub ja3: String,
    /// Its MD5, in hex.
    pub ja3_md5: String,
    /// JA4 (client fingerprint `a_b_c`), computed over TCP ("t" prefix).
    pub ja4: String,
}

impl Fingerprints {
    /// Bytes a hello holding these keeps alive. Charged in full to every holder: a value shared
    /// with others is over-counted, one that outlived its cache entry is not missed.
    pub fn held_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.ja3.capacity()
            + self.ja3_md5.capacity()
            + self.ja4.capacity()
    }
}

/// The cache, and the key being looked up (built in place: a hit allocates nothing).
struct Cache {
    known: LruCache<Vec<u16>, Arc<Fingerprints>>,
    key: Vec<u16>,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache {
        known: LruCache::new(CACHE_ENTRIES),
        key: Vec::new(),
    });
}

/// Everything JA3 and JA4 read from a hello, as one key (lists length-prefixed), into `key`.
fn cache_key(key: &mut Vec<u16>, ch: &ClientHello, first_alpn: Option<&[u8]>) {
    let lists: [&[u16]; 4] = [
        &ch.ciphers,
        &ch.extensions,
        &ch.groups,
        &ch.signature_algorithms,
    ];
    key.clear();
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
}

/// Fills the fingerprints of a freshly parsed hello.
pub(crate) fn fill(ch: &mut ClientHello) {
    let first_alpn = ch.first_alpn.as_deref();
    let found = CACHE.with_borrow_mut(|c| {
        let Cache { known, key } = c;
        cache_key(key, ch, first_alpn);
        if let Some(f) = known.get(key.as_slice()) {
            return Arc::clone(f);
        }
        let ja3 = ja3_string(ch);
        let f = Arc::new(Fingerprints {
            ja3_md5: md5_hex(&ja3),
            ja3,
            ja4: ja4_with_alpn(ch, first_alpn),
        });
        known.insert(key.clone(), Arc::clone(&f));
        f
    });
    ch.fingerprints = Some(found);
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

    #[test]
    fn cached_fingerprints_are_the_hellos_own_and_shared_on_repeats() {
        let hello = |cipher: u16, alpn: &[u8]| {
            let mut ch = ClientHello {
                legacy_version: Version(0x0303),
                ciphers: vec![0x1301, cipher],
                extensions: vec![0x0000, 0x0010],
                groups: vec![29],
                first_alpn: Some(alpn.to_vec()),
                alpn: vec![String::from_utf8_lossy(alpn).into_owned()],
                ..ClientHello::default()
            };
            fill(&mut ch);
            ch
        };
        let cases = [(0xc02b, &b"h2"[..]), (0xc02c, b"h2"), (0xc02b, b"http/1.1")];
        // Each twice, interleaved: a hit must give that hello's fingerprints, not the last one's.
        let mut first = Vec::new();
        for round in 0..2 {
            for (i, &(cipher, alpn)) in cases.iter().enumerate() {
                let ch = hello(cipher, alpn);
                let uncached = ja3_string(&ch);
                assert_eq!(ch.ja3(), uncached);
                assert_eq!(ch.ja3_md5(), md5_hex(&uncached));
                assert_eq!(ch.ja4(), ja4(&ch));
                let f = ch.fingerprints.clone().unwrap();
                if round == 0 {
                    first.push(f);
                } else {
                    assert!(
                        Arc::ptr_eq(&first[i], &f),
                        "a repeat shares the cached value"
                    );
                }
            }
        }
        // The strings start a cache line after the reference counts.
        let f = &first[0];
        assert_eq!(std::ptr::from_ref::<Fingerprints>(f) as usize % 64, 0);
        // The three differ from each other (cipher, then ALPN, changed the key).
        assert_ne!(first[0].ja3, first[1].ja3);
        assert_ne!(first[0].ja4, first[2].ja4);
    }
}
