//! Record framing and handshake-message reassembly for one direction.
//!
//! Consumes the in-order bytes of one direction of a TCP connection, in chunks of any size, plus
//! gap notifications; produces [`TlsEvent`]s through a callback. Records are framed straight from
//! the caller's slice; only a record cut by a chunk boundary is copied (bounded by `max_buffer`).
//! Handshake messages are parsed in place when a record holds them whole and reassembled in a
//! separate buffer (bounded by `max_handshake`) when they span records or chunks.
//!
//! Encryption state: after a ChangeCipherSpec in TLS ≤ 1.2 the stream treats later handshake
//! records as encrypted (the Finished); a stream that parsed a TLS 1.3 ServerHello or
//! HelloRetryRequest, or was told [`RecordStream::set_tls13`], ignores the 1.3 compatibility CCS.
//! An explicitly "encrypted" handshake record that is exactly one well-formed ClientHello is still
//! parsed (a second ClientHello after a HelloRetryRequest when the direction's version was not known
//! yet).

use std::mem;

use super::fingerprint;
use super::hello::{self, parse_client_hello, parse_draft_hello_retry, parse_server_hello};
use super::{ContentType, TlsEvent, Version};
use crate::stats::Stats;

/// A handshake record header followed by a ClientHello or ServerHello message header.
fn starts_with_hello_record(data: &[u8]) -> bool {
    matches!(data, [22, 3, 0..=4, _, _, 1 | 2, ..]) && plausible_header(data)
}

/// Largest TLSCiphertext fragment (RFC 5246 §6.2.3: 2^14 + 2048).
pub const MAX_RECORD_LEN: usize = 16384 + 2048;
/// Default bound for one reassembled handshake message (a long certificate chain fits).
pub const DEFAULT_MAX_HANDSHAKE_MESSAGE: usize = 1 << 20;
const HEADER_LEN: usize = 5;
/// A handshake reassembly buffer larger than this is released once empty.
const KEEP_CAPACITY: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum State {
    /// Nothing seen yet: the first bytes decide between TLS, SSLv2 ClientHello and not-TLS.
    #[default]
    Start,
    /// In sync: framing records.
    Records,
    /// After a gap: waiting for a chunk that starts with a plausible record header.
    /// `dropped` once a chunk was discarded (counted once per gap).
    Resync { dropped: bool },
    /// Framing lost without a gap (bad header); waits for the next gap.
    Desync,
    /// The stream did not start with TLS; ignored until a chunk starts with a hello record.
    NotTls,
}

/// Frames records and reassembles handshake messages for one direction.
#[derive(Debug)]
pub struct RecordStream {
    state: State,
    max_buffer: usize,
    max_handshake: usize,
    /// A record cut by a chunk boundary (header included).
    partial: Vec<u8>,
    /// Handshake bytes of a message not complete yet (header included).
    hs: Vec<u8>,
    /// Bytes of an oversized handshake message still to skip.
    hs_skip: usize,
    /// The first record uses the SSLv2 header.
    sslv2_first: bool,
    tls13: bool,
    encrypted_hs: bool,
    /// Records / handshake messages lost at a gap, counted at the next `feed`.
    pending_bad_records: u64,
    pending_bad_handshakes: u64,
}

impl Default for RecordStream {
    fn default() -> Self {
        RecordStream::new(crate::config::Limits::default().handshake_window)
    }
}

/// Bytes that cannot start a record.
struct Invalid;

/// How the bytes at the front of the input frame.
enum Frame {
    NeedMore,
    /// A whole record of this many bytes (header included).
    Record(usize),
    Invalid,
}

impl RecordStream {
    /// A stream whose cut records and reassembled handshake messages are each buffered up to
    /// `max_buffer` bytes (use `Limits::handshake_window`; a larger message is skipped and
    /// counted).
    pub fn new(max_buffer: usize) -> Self {
        RecordStream {
            state: State::Start,
            max_buffer,
            max_handshake: max_buffer.min(DEFAULT_MAX_HANDSHAKE_MESSAGE),
            partial: Vec::new(),
            hs: Vec::new(),
            hs_skip: 0,
            sslv2_first: false,
            tls13: false,
            encrypted_hs: false,
            pending_bad_records: 0,
            pending_bad_handshakes: 0,
        }
    }

    /// Sets the bound for one reassembled handshake message; a larger message is skipped and
    /// counted in `malformed_handshakes`.
    pub fn with_max_handshake(mut self, max_handshake: usize) -> Self {
        self.max_handshake = max_handshake;
        self
    }

    /// The connection negotiated TLS 1.3: Certificate messages use the 1.3 layout and a
    /// ChangeCipherSpec does not mean the handshake is encrypted from there on.
    pub fn set_tls13(&mut self, tls13: bool) {
        self.tls13 = tls13;
    }

    /// Heap memory of the reassembly buffers.
    pub fn heap_bytes(&self) -> usize {
        self.partial.capacity() + self.hs.capacity()
    }

    /// No more bytes will be fed: frees the buffers.
    pub fn release(&mut self) {
        self.partial = Vec::new();
        self.hs = Vec::new();
        self.hs_skip = 0;
    }

    /// Bytes were lost before the next `feed`: drops the cut record and the unfinished handshake
    /// message, then accepts data again only from a chunk that starts with a record header.
    pub fn gap(&mut self) {
        if self.state == State::NotTls {
            return;
        }
        if !self.partial.is_empty() {
            self.pending_bad_records += 1;
        }
        if !self.hs.is_empty() || self.hs_skip > 0 {
            self.pending_bad_handshakes += 1;
        }
        self.partial.clear();
        self.hs.clear();
        self.hs_skip = 0;
        self.sslv2_first = false;
        self.state = State::Resync { dropped: false };
    }

    /// Consumes the next in-order bytes and reports what they contained.
    pub fn feed(&mut self, mut data: &[u8], stats: &mut Stats, sink: &mut dyn FnMut(TlsEvent<'_>)) {
        stats.malformed_records += mem::take(&mut self.pending_bad_records);
        stats.malformed_handshakes += mem::take(&mut self.pending_bad_handshakes);
        loop {
            match self.state {
                // A protocol that upgrades to TLS (STARTTLS in LDAP/SMTP/MySQL, HTTP CONNECT):
                // TLS starts where a hello record starts a chunk. The caller bounds how long a
                // non-TLS stream is watched for this.
                State::NotTls if starts_with_hello_record(data) => {
                    self.state = State::Records;
                    break;
                }
                State::NotTls | State::Desync => return,
                State::Records => break,
                State::Start | State::Resync { .. } => {
                    // Classify on the first five bytes (possibly split across chunks).
                    let head: &[u8] = if self.partial.is_empty() && data.len() >= HEADER_LEN {
                        data
                    } else {
                        let take = HEADER_LEN
                            .saturating_sub(self.partial.len())
                            .min(data.len());
                        self.partial.extend_from_slice(&data[..take]);
                        data = &data[take..];
                        if self.partial.len() < HEADER_LEN {
                            return;
                        }
                        &self.partial
                    };
                    let start = self.state == State::Start;
                    if plausible_header(head) {
                        self.state = State::Records;
                    } else if start && sslv2_client_hello_len(head).is_some() {
                        self.sslv2_first = true;
                        self.state = State::Records;
                    } else if start {
                        self.partial.clear();
                        self.state = State::NotTls;
                        sink(TlsEvent::NotTls);
                        return;
                    } else {
                        self.partial.clear();
                        if self.state == (State::Resync { dropped: false }) {
                            stats.malformed_records += 1;
                            self.state = State::Resync { dropped: true };
                        }
                        return;
                    }
                }
            }
        }

        // Complete a record cut by the previous chunk boundary.
        if !self.partial.is_empty() {
            loop {
                match self.record_len(&self.partial) {
                    Err(Invalid) => return self.desync(stats, sink),
                    Ok(Some(total)) => {
                        // Only a header cut by the boundary gets here with a record too large
                        // to buffer (`frame` refuses to start buffering one).
                        if total > self.max_buffer.max(HEADER_LEN) {
                            return self.desync(stats, sink);
                        }
                        let want = total.saturating_sub(self.partial.len());
                        let take = want.min(data.len());
                        self.partial.extend_from_slice(&data[..take]);
                        data = &data[take..];
                        if take < want {
                            return;
                        }
                        let rec = mem::take(&mut self.partial);
                        self.record(&rec, stats, sink);
                        // Kept for the next cut record: it never exceeds one record.
                        self.partial = rec;
                        self.partial.clear();
                        break;
                    }
                    Ok(None) => {
                        // The header is incomplete: top it up byte-wise (at most five bytes).
                        let Some((&b, rest)) = data.split_first() else {
                            return;
                        };
                        self.partial.push(b);
                        data = rest;
                    }
                }
            }
        }

        // Whole records straight from the caller's slice (in sync: every other state returned
        // above, and only `desync` leaves it, returning too).
        while !data.is_empty() {
            match self.frame(data) {
                Frame::Record(total) => {
                    let (rec, rest) = data.split_at(total);
                    self.record(rec, stats, sink);
                    data = rest;
                }
                Frame::NeedMore => {
                    self.partial.extend_from_slice(data);
                    return;
                }
                Frame::Invalid => return self.desync(stats, sink),
            }
        }
    }

    fn desync(&mut self, stats: &mut Stats, sink: &mut dyn FnMut(TlsEvent<'_>)) {
        stats.malformed_records += 1;
        self.partial.clear();
        self.state = State::Desync;
        sink(TlsEvent::Malformed);
    }

    /// The whole length (header included) of the record that starts `b`, once its header is
    /// there (`None` before).
    fn record_len(&self, b: &[u8]) -> Result<Option<usize>, Invalid> {
        if self.sslv2_first {
            return Ok(match (b.first(), b.get(1)) {
                (Some(&hi), Some(&lo)) => Some(2 + (usize::from(hi & 0x7f) << 8 | usize::from(lo))),
                _ => None,
            });
        }
        let Some(h) = b.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let version = u16::from_be_bytes([h[1], h[2]]);
        let len = usize::from(u16::from_be_bytes([h[3], h[4]]));
        if !(20..=24).contains(&h[0])
            || version >> 8 != 3
            || version & 0xff > 4
            || len > MAX_RECORD_LEN
        {
            return Err(Invalid);
        }
        Ok(Some(HEADER_LEN + len))
    }

    fn frame(&self, b: &[u8]) -> Frame {
        let total = match self.record_len(b) {
            Ok(Some(total)) => total,
            Ok(None) => return Frame::NeedMore,
            Err(Invalid) => return Frame::Invalid,
        };
        if total > self.max_buffer.max(HEADER_LEN) && b.len() < total {
            // Would have to buffer more than allowed.
            return Frame::Invalid;
        }
        if b.len() < total {
            Frame::NeedMore
        } else {
            Frame::Record(total)
        }
    }

    /// One whole record (header included).
    fn record(&mut self, rec: &[u8], stats: &mut Stats, sink: &mut dyn FnMut(TlsEvent<'_>)) {
        stats.tls_records += 1;
        if mem::take(&mut self.sslv2_first) {
            let body = rec.get(2..).unwrap_or_default();
            sink(TlsEvent::Record {
                content_type: ContentType::Handshake,
                version: Version(0x0200),
                len: u16::try_from(body.len()).unwrap_or(u16::MAX),
            });
            match hello::parse_sslv2_client_hello(body) {
                Some(mut ch) => {
                    fingerprint::fill(&mut ch);
                    sink(TlsEvent::ClientHello(Box::new(ch)))
                }
                None => self.bad_handshake(stats, sink),
            }
            return;
        }
        let (Some(h), Some(payload)) = (rec.get(..HEADER_LEN), rec.get(HEADER_LEN..)) else {
            return;
        };
        let content_type = match h[0] {
            20 => ContentType::ChangeCipherSpec,
            21 => ContentType::Alert,
            22 => ContentType::Handshake,
            23 => ContentType::ApplicationData,
            _ => ContentType::Heartbeat,
        };
        let len = u16::from_be_bytes([h[3], h[4]]);
        sink(TlsEvent::Record {
            content_type,
            version: Version(u16::from_be_bytes([h[1], h[2]])),
            len,
        });
        match content_type {
            ContentType::ChangeCipherSpec => {
                if !self.tls13 {
                    self.encrypted_hs = true;
                }
                sink(TlsEvent::ChangeCipherSpec);
            }
            ContentType::Alert => {
                let levels_ok = payload.chunks(2).all(|a| matches!(a, [1 | 2, _]));
                let plain = payload.len() == 2
                    || (!self.encrypted_hs
                        && !payload.is_empty()
                        && payload.len() % 2 == 0
                        && levels_ok);
                if plain {
                    for a in payload.chunks_exact(2) {
                        sink(TlsEvent::Alert {
                            level: a[0],
                            code: a[1],
                        });
                    }
                } else {
                    sink(TlsEvent::Opaque { content_type, len });
                }
            }
            ContentType::Handshake => {
                if self.encrypted_hs && !is_whole_client_hello(payload) {
                    sink(TlsEvent::Opaque { content_type, len });
                } else {
                    self.handshake_bytes(payload, stats, sink);
                }
            }
            ContentType::ApplicationData | ContentType::Heartbeat => {
                sink(TlsEvent::Opaque { content_type, len })
            }
        }
    }

    fn handshake_bytes(
        &mut self,
        mut p: &[u8],
        stats: &mut Stats,
        sink: &mut dyn FnMut(TlsEvent<'_>),
    ) {
        if self.hs_skip > 0 {
            let n = self.hs_skip.min(p.len());
            self.hs_skip -= n;
            p = &p[n..];
        }
        if p.is_empty() {
            return;
        }
        if self.hs.is_empty() {
            let used = self.messages(p, stats, sink);
            if let Some(rest) = p.get(used..).filter(|r| !r.is_empty()) {
                self.hs.extend_from_slice(rest);
            }
        } else {
            self.hs.extend_from_slice(p);
            let mut buf = mem::take(&mut self.hs);
            let used = self.messages(&buf, stats, sink);
            buf.drain(..used.min(buf.len()));
            if buf.is_empty() && buf.capacity() > KEEP_CAPACITY {
                buf = Vec::new();
            }
            self.hs = buf;
        }
    }

    /// Parses the complete handshake messages at the front of `b`; returns the bytes consumed.
    fn messages(
        &mut self,
        b: &[u8],
        stats: &mut Stats,
        sink: &mut dyn FnMut(TlsEvent<'_>),
    ) -> usize {
        let mut at = 0;
        while let Some(&[ty, l0, l1, l2]) = b.get(at..at + 4) {
            let len = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
            let total = 4 + len;
            if len > self.max_handshake {
                self.bad_handshake(stats, sink);
                let have = b.len() - at;
                if have >= total {
                    at += total;
                    continue;
                }
                self.hs_skip = total - have;
                return b.len();
            }
            let Some(body) = b.get(at + 4..at + total) else {
                break;
            };
            self.message(ty, body, stats, sink);
            at += total;
        }
        at
    }

    fn bad_handshake(&mut self, stats: &mut Stats, sink: &mut dyn FnMut(TlsEvent<'_>)) {
        stats.malformed_handshakes += 1;
        sink(TlsEvent::Malformed);
    }

    /// One complete handshake message.
    fn message(
        &mut self,
        ty: u8,
        body: &[u8],
        stats: &mut Stats,
        sink: &mut dyn FnMut(TlsEvent<'_>),
    ) {
        let event = match ty {
            1 => match parse_client_hello(body) {
                Some(mut ch) => {
                    fingerprint::fill(&mut ch);
                    TlsEvent::ClientHello(Box::new(ch))
                }
                None => return self.bad_handshake(stats, sink),
            },
            2 | 6 => {
                let sh = if ty == 2 {
                    parse_server_hello(body)
                } else {
                    parse_draft_hello_retry(body)
                };
                let Some(sh) = sh else {
                    return self.bad_handshake(stats, sink);
                };
                if sh.hello_retry || sh.selected_version.is_tls13() {
                    self.tls13 = true;
                }
                TlsEvent::ServerHello(Box::new(sh))
            }
            4 => TlsEvent::NewSessionTicket,
            8 => TlsEvent::EncryptedExtensions,
            11 => match CertList::parse(body, self.tls13)
                .or_else(|| CertList::parse(body, !self.tls13))
            {
                Some(certs) => TlsEvent::Certificate {
                    tls13: certs.tls13,
                    certs,
                },
                None => return self.bad_handshake(stats, sink),
            },
            12 => TlsEvent::ServerKeyExchange,
            13 => TlsEvent::CertificateRequest,
            14 => TlsEvent::ServerHelloDone,
            15 => TlsEvent::CertificateVerify,
            16 => TlsEvent::ClientKeyExchange,
            20 => TlsEvent::Finished,
            22 => TlsEvent::CertificateStatus,
            // hello_request, end_of_early_data, certificate_url, supplemental_data, key_update,
            // compressed_certificate, next_protocol, message_hash: nothing to report.
            0 | 5 | 21 | 23 | 24 | 25 | 67 | 254 => return,
            _ => return self.bad_handshake(stats, sink),
        };
        sink(event);
    }
}

fn u24(b: &[u8], at: usize) -> Option<usize> {
    let s = b.get(at..at + 3)?;
    Some(usize::from(s[0]) << 16 | usize::from(s[1]) << 8 | usize::from(s[2]))
}

/// The DER certificates of a Certificate message body, in wire order, and whether the TLS 1.3
/// layout (request context; per-entry extensions) was used. `None` unless the layout fits exactly.
/// The certificates of a Certificate message body (DER, in wire order), its layout checked
/// once: iterating reads them in place.
#[derive(Clone, Copy, Debug)]
pub struct CertList<'a> {
    /// The entries: `(u24 length, DER[, u16 length, extensions])*`.
    entries: &'a [u8],
    /// The TLS 1.3 layout (request context before, extensions after each certificate).
    tls13: bool,
    len: usize,
}

impl<'a> CertList<'a> {
    /// `None` unless `body` is exactly a certificate list in the given layout.
    fn parse(body: &'a [u8], tls13: bool) -> Option<Self> {
        let at = if tls13 {
            1 + usize::from(*body.first()?)
        } else {
            0
        };
        let list_len = u24(body, at)?;
        let entries = body.get(at + 3..)?;
        if entries.len() != list_len {
            return None;
        }
        let mut list = CertList {
            entries,
            tls13,
            len: 0,
        };
        let mut rest = entries;
        while !rest.is_empty() {
            let (_, next) = list.entry(rest)?;
            list.len += 1;
            rest = next;
        }
        Some(list)
    }

    /// The first certificate of `rest` and what follows it.
    fn entry(&self, rest: &'a [u8]) -> Option<(&'a [u8], &'a [u8])> {
        let len = u24(rest, 0)?;
        let der = rest.get(3..3 + len)?;
        let mut end = 3 + len;
        if self.tls13 {
            end += 2 + usize::from(u16::from_be_bytes([*rest.get(end)?, *rest.get(end + 1)?]));
        }
        Some((der, rest.get(end..)?))
    }

    /// How many certificates.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The certificates' DER, in wire order.
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + use<'a> {
        let list = *self;
        let mut rest = self.entries;
        std::iter::from_fn(move || {
            let (der, next) = list.entry(rest)?;
            rest = next;
            Some(der)
        })
    }
}

/// A handshake record payload that is exactly one ClientHello message.
fn is_whole_client_hello(payload: &[u8]) -> bool {
    payload.first() == Some(&1) && u24(payload, 1).is_some_and(|len| 4 + len == payload.len())
}

/// A plausible TLS record header: type 20–23, version 0x0300–0x0304, length 1..=18432.
fn plausible_header(b: &[u8]) -> bool {
    let Some(h) = b.get(..HEADER_LEN) else {
        return false;
    };
    let version = u16::from_be_bytes([h[1], h[2]]);
    let len = usize::from(u16::from_be_bytes([h[3], h[4]]));
    (20..=23).contains(&h[0])
        && (0x0300..=0x0304).contains(&version)
        && (1..=MAX_RECORD_LEN).contains(&len)
}

/// Total length (2-byte header included) of an SSLv2 CLIENT-HELLO record starting `b`, when its
/// first bytes say so: high-bit length, message type 1, version 0x0002 or 0x03xx, and, when enough
/// bytes are there, cipher-spec/session-id/challenge lengths that add up.
fn sslv2_client_hello_len(b: &[u8]) -> Option<usize> {
    let (&hi, &lo, &ty, &major, &minor) = (b.first()?, b.get(1)?, b.get(2)?, b.get(3)?, b.get(4)?);
    let len = usize::from(hi & 0x7f) << 8 | usize::from(lo);
    let version_ok = (major == 0 && minor == 2) || (major == 3 && minor <= 4);
    if hi & 0x80 == 0 || ty != 1 || !version_ok || len < 9 {
        return None;
    }
    if let Some(l) = b.get(5..11) {
        let specs = usize::from(u16::from_be_bytes([l[0], l[1]]));
        let sid = usize::from(u16::from_be_bytes([l[2], l[3]]));
        let challenge = usize::from(u16::from_be_bytes([l[4], l[5]]));
        if specs == 0
            || specs % 3 != 0
            || 9 + specs + sid + challenge != len
            || !(16..=32).contains(&challenge)
        {
            return None;
        }
    }
    Some(2 + len)
}

/// Does `payload` (the first bytes of a TCP stream or segment) start like TLS? A plausible record
/// header (type 20–23, version 0x0300–0x0304, length 1..=18432) or an SSLv2 ClientHello.
pub fn looks_like_tls_start(payload: &[u8]) -> bool {
    plausible_header(payload) || (payload.len() >= 11 && sslv2_client_hello_len(payload).is_some())
}

/// Does `payload` start with a ClientHello (a handshake record whose first message is type 1, or
/// an SSLv2 CLIENT-HELLO)?
pub fn looks_like_client_hello(payload: &[u8]) -> bool {
    (plausible_header(payload) && payload.first() == Some(&22) && payload.get(5) == Some(&1))
        || (payload.len() >= 11 && sslv2_client_hello_len(payload).is_some())
}

#[cfg(test)]
mod tests;
