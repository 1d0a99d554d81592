//! The per-connection state machine: feeds both directions' bytes to their [`RecordStream`]s,
//! collects hellos, chains, alerts and record facts, and asks [`outcome::decide`] for a verdict.
//!
//! Consumes stream bytes (as a [`StreamHandler`]); produces one [`Connection`], either as soon as
//! the outcome is decided ([`Tracker::take_decided`], after which the flow stops wanting payload)
//! or when the flow ends ([`Tracker::finish`]).

use std::sync::Arc;

use crate::base::{PerSide, Timestamp};
use crate::cert::{self, CertCache};
use crate::config::Limits;
use crate::flow::{CloseReason, Endpoints, Side, StreamHandler, Worth};
use crate::stats::Stats;
use crate::tls::fingerprint::Fingerprints;
use crate::tls::{ClientHello, ContentType, RecordStream, ServerHello, TlsEvent, Version};

use super::outcome::{self, Close, Facts, SealedRecord, SideFacts, Verdict};
use super::{Alert, Chain, Connection, Outcome};

/// Alerts kept per connection (a peer could send thousands; the first ones decide).
const MAX_ALERTS: usize = 16;
/// Payload bytes without a hello after which a flow is given up on (not TLS, or a protocol that
/// never upgrades to TLS).
const NOT_TLS_AFTER: usize = 64 * 1024;
/// Sealed TLS 1.3 records remembered; the handshake is always decided well within this.
const MAX_SEALED: usize = 64;

/// What the handshake tracker needs besides the bytes: the shared certificate cache and counters.
/// ALPS (application_settings) extension codepoints in a ClientHello: the draft's 17513 and the
/// new one, 17613, that Chrome moved to.
const ALPS_EXTENSIONS: [u16; 2] = [17513, 17613];

/// Whether a TLS 1.3 client was asked for a certificate, from its sealed records: it sent more
/// records before its Finished than its EncryptedExtensions (one when it offered ALPS).
fn tls13_client_auth(sealed: &[SealedRecord], alps_offered: bool) -> bool {
    let before_finished = sealed
        .iter()
        .filter(|r| r.from == Side::Client)
        .take_while(|r| !outcome::FINISHED_LENS.contains(&r.len))
        .count();
    before_finished > usize::from(alps_offered)
}

pub struct TrackerCtx {
    pub certs: CertCache,
    pub stats: Stats,
}

impl AsMut<Stats> for TrackerCtx {
    fn as_mut(&mut self) -> &mut Stats {
        &mut self.stats
    }
}

/// Per-side state.
#[derive(Default)]
struct SideState {
    facts: SideFacts,
    chain: Chain,
    gap_bytes: u64,
}

/// Follows one connection's handshake.
pub struct Tracker {
    start: Timestamp,
    last: Timestamp,
    endpoints: Endpoints,
    service: Arc<str>,
    vlan: Option<u16>,
    max_chain: usize,
    streams: PerSide<RecordStream>,
    sides: PerSide<SideState>,
    client_hello: Option<Box<ClientHello>>,
    server_hello: Option<Box<ServerHello>>,
    hello_retry: bool,
    version: Option<Version>,
    client_auth_requested: bool,
    resumed: bool,
    /// A Certificate message was seen from either side: a TLS ≤ 1.2 full handshake (an
    /// abbreviated one carries none; a client only sends one when the server asked in a full one).
    certificate_seen: bool,
    alerts: Vec<Alert>,
    sealed: Vec<SealedRecord>,
    /// A ClientHello or ServerHello was seen. Flows without one (not TLS, or TLS picked up after
    /// its handshake) yield no record: there is no handshake to summarize.
    saw_hello: bool,
    /// Payload bytes seen before any hello; past the handshake window the flow is given up on
    /// (not TLS, or a protocol that never upgrades to TLS).
    before_hello: usize,
    window: usize,
    verdict: Option<(Outcome, String)>,
    /// The rule that decided the verdict (machine-readable, beside its evidence text).
    verdict_code: &'static str,
    reported: bool,
    dropped: Dropped,
}

/// Drops counted inside the tracker, moved to [`Stats`] when it has them.
#[derive(Default)]
struct Dropped {
    alerts: u64,
    certs: u64,
}

impl Tracker {
    pub fn new(
        endpoints: Endpoints,
        service: Arc<str>,
        start: Timestamp,
        vlan: Option<u16>,
        limits: &Limits,
    ) -> Self {
        let stream = || RecordStream::new(limits.handshake_window);
        Tracker {
            start,
            last: start,
            endpoints,
            service,
            vlan,
            max_chain: limits.max_chain_len,
            streams: PerSide::from_fn(|_| stream()),
            sides: Default::default(),
            client_hello: None,
            server_hello: None,
            hello_retry: false,
            version: None,
            client_auth_requested: false,
            resumed: false,
            certificate_seen: false,
            alerts: Vec::new(),
            sealed: Vec::new(),
            saw_hello: false,
            before_hello: 0,
            window: limits.handshake_window,
            verdict: None,
            verdict_code: "undecided",
            reported: false,
            dropped: Dropped::default(),
        }
    }

    /// The connection record, once, as soon as the outcome is decided.
    pub fn take_decided(&mut self) -> Option<Connection> {
        if self.reported || self.verdict.is_none() {
            return None;
        }
        self.reported = true;
        Some(self.build())
    }

    /// Final record when the flow ends; `None` if it was already reported or never carried TLS.
    pub fn finish(mut self, reason: CloseReason, last: Timestamp) -> Option<Connection> {
        if self.reported || !self.saw_hello {
            return None;
        }
        self.last = self.last.max(last);
        if self.verdict.is_none() {
            self.evaluate(true);
        }
        if let (
            Some((Outcome::Incomplete, evidence)),
            CloseReason::Evicted | CloseReason::IdleTimeout,
        ) = (self.verdict.as_mut(), reason)
        {
            let why = if reason == CloseReason::Evicted {
                "evicted"
            } else {
                "idle timeout"
            };
            evidence.push_str(&format!(" [flow {why}]"));
        }
        self.reported = true;
        Some(self.build())
    }

    fn build(&mut self) -> Connection {
        // Built once (`reported`): the evidence moves out; only the verdict's presence is read
        // after this.
        let (outcome, evidence) = match &mut self.verdict {
            Some((outcome, evidence)) => (*outcome, std::mem::take(evidence)),
            None => (Outcome::Incomplete, "undecided".into()),
        };
        let probe = self
            .client_hello
            .as_deref()
            .and_then(|h| h.sni.as_deref())
            .is_some_and(|sni| sni == crate::config::PROBE_SNI);
        let server_chain = std::mem::take(&mut self.sides.server.chain);
        let client_chain = std::mem::take(&mut self.sides.client.chain);
        Connection {
            start: self.start,
            end: self.last,
            client: self.endpoints.client,
            server: self.endpoints.server,
            service: self.service.clone(),
            vlan: self.vlan,
            client_hello: self.client_hello.take(),
            server_hello: self.server_hello.take(),
            hello_retry: self.hello_retry,
            version: self.version,
            ca_key_id: cert::ca_key_id(&server_chain),
            client_ca_key_id: cert::ca_key_id(&client_chain),
            server_chain,
            client_chain,
            client_auth_requested: self.client_auth_requested,
            resumed: self.resumed,
            alerts: std::mem::take(&mut self.alerts),
            outcome,
            evidence,
            evidence_code: self.verdict_code,
            probe,
            certificates: PerSide::default(),
            app_records: PerSide::from_fn(|side| self.sides[side].facts.app_records),
            gap_bytes: PerSide::from_fn(|side| self.sides[side].gap_bytes),
        }
    }

    fn is_tls13(&self) -> bool {
        self.version.is_some_and(Version::is_tls13)
    }

    fn push_alert(&mut self, alert: Alert) {
        if self.alerts.len() < MAX_ALERTS {
            self.alerts.push(alert);
        } else {
            self.dropped.alerts += 1;
        }
    }

    /// Moves the drops counted while the stream was parsing (when `Stats` was lent to it).
    fn flush_drops(&mut self, stats: &mut Stats) {
        let d = std::mem::take(&mut self.dropped);
        stats.alerts_dropped += d.alerts;
        stats.chain_certs_dropped += d.certs;
    }

    fn evaluate(&mut self, ended: bool) {
        if self.verdict.is_some() || !self.saw_hello {
            return;
        }
        let facts = Facts {
            server_hello: self.server_hello.is_some(),
            version: self.version,
            alerts: &self.alerts,
            client: self.sides.client.facts,
            server: self.sides.server.facts,
            sealed: &self.sealed,
            ended,
        };
        if let Verdict::Decided {
            outcome,
            code,
            evidence,
            inferred,
        } = outcome::decide(&facts)
        {
            if let Some(alert) = inferred {
                self.push_alert(alert);
            }
            // A client that aborted sent no flight to read this from.
            if self.is_tls13() && outcome != Outcome::RejectedByClient {
                self.infer_tls13_client_auth();
            }
            self.verdict = Some((outcome, evidence));
            self.verdict_code = code;
            // Decided: no more payload is read, so the reassembly buffers go now.
            self.streams.client.release();
            self.streams.server.release();
        }
    }

    /// TLS 1.3 hides CertificateRequest; a client that sends records before its Finished (its
    /// Certificate and CertificateVerify, or an empty Certificate) was asked for a certificate.
    /// A client that offered ALPS (application_settings) sends its own EncryptedExtensions first
    /// when the server accepts it: with ALPS offered, one record before Finished is that, not a
    /// certificate (Chrome's TLS 1.3 handshakes).
    fn infer_tls13_client_auth(&mut self) {
        let alps = self
            .client_hello
            .as_ref()
            .is_some_and(|ch| ch.extensions.iter().any(|e| ALPS_EXTENSIONS.contains(e)));
        if tls13_client_auth(&self.sealed, alps) {
            self.client_auth_requested = true;
        }
    }

    fn on_event(&mut self, certs: &mut CertCache, side: Side, ts: Timestamp, event: TlsEvent<'_>) {
        let me = side;
        match event {
            TlsEvent::ClientHello(ch) if side == Side::Client => {
                self.saw_hello = true;
                // After a HelloRetryRequest the second ClientHello replaces the first for
                // fingerprints of the completed negotiation; keep the first (JA3/JA4 convention).
                if self.client_hello.is_none() {
                    self.client_hello = Some(ch);
                }
            }
            TlsEvent::ServerHello(sh) if side == Side::Server => {
                self.saw_hello = true;
                if sh.selected_version.is_tls13() {
                    // The client's later records are TLS 1.3 too (its second ClientHello after a
                    // HelloRetryRequest stays plaintext despite a compatibility CCS).
                    self.streams.client.set_tls13(true);
                }
                if sh.hello_retry {
                    self.hello_retry = true;
                    return;
                }
                let version = sh.selected_version;
                self.version = Some(version);
                if version.is_tls13() {
                    self.resumed = sh.psk;
                } else if let Some(ch) = &self.client_hello {
                    // TLS ≤ 1.2 abbreviated handshake: the server echoes the offered session id.
                    self.resumed = !sh.session_id.is_empty() && sh.session_id == ch.session_id;
                }
                self.server_hello = Some(sh);
            }
            TlsEvent::Certificate { certs: ders, .. } => {
                self.certificate_seen = true;
                self.dropped.certs += ders.len().saturating_sub(self.max_chain) as u64;
                let chain: Chain = ders
                    .iter()
                    .take(self.max_chain)
                    .map(|der| certs.get(der))
                    .collect();
                if !chain.is_empty() || self.sides[me].chain.is_empty() {
                    self.sides[me].chain = chain;
                }
            }
            TlsEvent::CertificateRequest if side == Side::Server => {
                self.client_auth_requested = true
            }
            TlsEvent::Alert { level, code } => self.push_alert(Alert::Plain {
                from: side,
                level,
                code,
                ts,
            }),
            TlsEvent::ChangeCipherSpec if !self.is_tls13() && self.server_hello.is_some() => {
                self.sides[me].facts.ccs = true;
                // A server that goes straight to ChangeCipherSpec resumed a session (ticket),
                // unless a Certificate (the server's, or the client's when the server's was lost
                // to a gap) shows a full handshake.
                if side == Side::Server && !self.certificate_seen {
                    self.resumed = true;
                }
            }
            TlsEvent::Opaque { content_type, len } => self.on_opaque(side, ts, content_type, len),
            // Not TLS, malformed, or a hello from the wrong side: nothing to record.
            _ => {}
        }
    }

    fn on_opaque(&mut self, side: Side, ts: Timestamp, content_type: ContentType, len: u16) {
        let me = side;
        if self.is_tls13() {
            if content_type == ContentType::ApplicationData && self.sealed.len() < MAX_SEALED {
                self.sealed.push(SealedRecord {
                    from: side,
                    len,
                    ts,
                });
            }
            return;
        }
        let facts = &mut self.sides[me].facts;
        match content_type {
            ContentType::Handshake if facts.ccs => facts.finished = true,
            ContentType::Alert if facts.ccs && facts.sealed_alert.is_none() => {
                facts.sealed_alert = Some(ts)
            }
            ContentType::ApplicationData => facts.app_records = facts.app_records.saturating_add(1),
            _ => {}
        }
    }
}

impl StreamHandler for Tracker {
    type Ctx = TrackerCtx;

    fn on_data(&mut self, ctx: &mut TrackerCtx, side: Side, ts: Timestamp, data: &[u8]) {
        self.last = ts;
        if !self.wants_data() {
            return;
        }
        if !self.saw_hello {
            self.before_hello = self.before_hello.saturating_add(data.len());
        }
        // The stream is moved out while it parses so its events can update the rest of the
        // tracker; a stream reacts to its own ServerHello and ChangeCipherSpec by itself.
        let mut stream = std::mem::take(&mut self.streams[side]);
        let TrackerCtx { certs, stats } = ctx;
        stream.feed(data, stats, &mut |event| {
            self.on_event(certs, side, ts, event)
        });
        self.streams[side] = stream;
        self.evaluate(false);
        self.flush_drops(stats);
    }

    fn on_gap(&mut self, _ctx: &mut TrackerCtx, side: Side, bytes: u64) {
        let s = &mut self.sides[side];
        s.gap_bytes = s.gap_bytes.saturating_add(bytes);
        self.streams[side].gap();
    }

    fn on_close_from(&mut self, ctx: &mut TrackerCtx, side: Side, ts: Timestamp, rst: bool) {
        self.last = ts;
        let facts = &mut self.sides[side].facts;
        if facts.close.is_none() {
            facts.close = Some(Close { rst, ts });
        }
        if self.saw_hello {
            self.evaluate(false);
        }
        self.flush_drops(&mut ctx.stats);
    }

    fn wants_data(&self) -> bool {
        self.verdict.is_none()
            && (self.saw_hello || self.before_hello <= self.window.min(NOT_TLS_AFTER))
    }

    fn heap_bytes(&self) -> usize {
        let hello = |h: &Option<Box<ClientHello>>| {
            h.as_deref().map_or(0, |h| {
                std::mem::size_of::<ClientHello>()
                    + 2 * (h.ciphers.capacity()
                        + h.extensions.capacity()
                        + h.groups.capacity()
                        + h.signature_algorithms.capacity())
                    + h.fingerprints
                        .as_deref()
                        .map_or(0, Fingerprints::held_bytes)
                    + h.sni.as_ref().map_or(0, String::capacity)
            })
        };
        self.streams.client.heap_bytes()
            + self.streams.server.heap_bytes()
            + hello(&self.client_hello)
            + self
                .server_hello
                .as_ref()
                .map_or(0, |_| std::mem::size_of::<ServerHello>())
            + self.alerts.capacity() * std::mem::size_of::<Alert>()
            + self.sealed.capacity() * std::mem::size_of::<SealedRecord>()
            + (self.sides.client.chain.capacity() + self.sides.server.chain.capacity())
                * std::mem::size_of::<crate::cert::Presented>()
    }

    fn worth(&self) -> Worth {
        if self.reported {
            Worth::Reported
        } else if self.saw_hello {
            Worth::InProgress
        } else {
            Worth::Nothing
        }
    }
}

#[cfg(test)]
mod tests;
