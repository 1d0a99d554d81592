//! Read-only, opt-in probes of what CloudCore replicas actually hold.
//!
//! Consumes a [`ProbeTarget`] and [`ProbeLimits`]; produces a [`ProbeResult`]: the CA a replica serves
//! at `GET /ca.crt` (`--probe-ca https://HOST:10002`, fetched like `keadm join` does: no client
//! certificate, server certificate not verified, DER body), or the chain a TLS server presents
//! (`--probe-chain HOST:PORT`: a handshake without a client certificate, recorded even when the
//! server then rejects the missing certificate). Both are blocking and bounded by a connect timeout,
//! a read/write timeout, an overall deadline and a response size cap; the live mode runs them on a
//! thread. [`ProbeScheduler`] decides when: periodically, and immediately (rate-limited) when
//! failures start, never two at once per target.
//!
//! A target may name a host instead of an address. Resolution has a timeout ([`resolve_all`]), and
//! the scheduler follows the answer: a name that resolves to several addresses (a headless Service
//! of CloudCore replicas) becomes one probe target per address, re-resolved at every probe
//! interval in the background (never on the caller's thread); new addresses get probed, vanished
//! ones are dropped, and a failed resolution keeps the last known addresses and is reported as a
//! failed probe of the name.

use std::io::{self, Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs as _};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};
use serde::Serialize;

use super::{CaIdentity, PresentedCa};
use crate::base::KeyId;
use crate::error::Error;

/// Which probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeKind {
    /// `GET https://HOST:PORT/ca.crt`.
    CaEndpoint,
    /// TLS handshake only, to record the presented chain.
    Chain,
}

impl ProbeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::CaEndpoint => "ca_endpoint",
            ProbeKind::Chain => "chain",
        }
    }
}

/// A probe destination.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ProbeTarget {
    pub kind: ProbeKind,
    /// As configured: an address or a host name.
    pub host: String,
    pub port: u16,
    /// The address `host` resolved to, when this target is one of the addresses of a name (set by
    /// [`ProbeScheduler`]); `None`: `host` is an address, or is resolved when probed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<IpAddr>,
}

impl ProbeTarget {
    /// Parses `--probe-ca https://HOST[:PORT][/]` (port 10002 by default).
    pub fn parse_ca_url(s: &str) -> Result<ProbeTarget, Error> {
        let bad = |why: &str| Error::Usage(format!("--probe-ca {s}: {why}"));
        let rest = s
            .strip_prefix("https://")
            .ok_or_else(|| bad("expected https://HOST:PORT"))?;
        let authority = rest.split('/').next().unwrap_or_default();
        if !matches!(rest.get(authority.len()..), Some("" | "/" | "/ca.crt")) {
            return Err(bad(
                "give only https://HOST:PORT; the path /ca.crt is fixed",
            ));
        }
        let (host, port) = split_host_port(authority, Some(10002)).map_err(|w| bad(&w))?;
        Ok(ProbeTarget {
            kind: ProbeKind::CaEndpoint,
            host,
            port,
            addr: None,
        })
    }

    /// Parses `--probe-chain HOST:PORT` (`[v6]:PORT` for IPv6).
    pub fn parse_chain(s: &str) -> Result<ProbeTarget, Error> {
        let (host, port) = split_host_port(s, None)
            .map_err(|w| Error::Usage(format!("--probe-chain {s}: {w}")))?;
        Ok(ProbeTarget {
            kind: ProbeKind::Chain,
            host,
            port,
            addr: None,
        })
    }

    /// `host:port` as shown in events and metric labels: the resolved address when this target is
    /// one address of a name (one label per replica), else the host as configured.
    pub fn authority(&self) -> String {
        let host = self
            .addr
            .map_or_else(|| self.host.clone(), |a| a.to_string());
        if host.contains(':') {
            format!("[{host}]:{}", self.port)
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The same target pinned to one address of its host name.
    pub fn at(&self, addr: IpAddr) -> ProbeTarget {
        ProbeTarget {
            addr: Some(addr),
            ..self.clone()
        }
    }

    /// Whether `host` is a name (to be resolved) rather than an address.
    pub fn is_name(&self) -> bool {
        self.host.parse::<IpAddr>().is_err()
    }
}

/// Resolves `host` (an address or a name) to its addresses, sorted and without duplicates, at most
/// `max`; fails after `timeout` (the system resolver has no timeout of its own: it runs on a
/// short-lived thread that is left to finish on its own when the answer comes too late).
pub fn resolve_all(
    host: &str,
    port: u16,
    timeout: Duration,
    max: usize,
) -> Result<Vec<IpAddr>, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let rx = spawn_resolve(host, port)?;
    match rx.recv_timeout(timeout) {
        Ok(r) => r.map(|mut a| {
            a.truncate(max.max(1));
            a
        }),
        Err(RecvTimeoutError::Timeout) => Err(format!(
            "resolve {host}: no answer within {} ms",
            timeout.as_millis()
        )),
        Err(RecvTimeoutError::Disconnected) => Err(format!("resolve {host}: resolver failed")),
    }
}

type Resolution = Result<Vec<IpAddr>, String>;

/// Runs the system resolver for `host` on its own thread; the answer arrives on the receiver.
fn spawn_resolve(host: &str, port: u16) -> Result<Receiver<Resolution>, String> {
    let (tx, rx) = mpsc::channel();
    let name = host.to_string();
    std::thread::Builder::new()
        .name("probe-resolve".into())
        .spawn(move || {
            let r = (name.as_str(), port)
                .to_socket_addrs()
                .map_err(|e| format!("resolve {name}: {e}"))
                .and_then(|it| {
                    let mut a: Vec<IpAddr> = it.map(|s| s.ip()).collect();
                    a.sort();
                    a.dedup();
                    if a.is_empty() {
                        Err(format!("resolve {name}: no address"))
                    } else {
                        Ok(a)
                    }
                });
            let _ = tx.send(r);
        })
        .map_err(|e| format!("resolve {host}: cannot start the resolver thread: {e}"))?;
    Ok(rx)
}

fn split_host_port(s: &str, default_port: Option<u16>) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or("unclosed '['")?;
        (h, after.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p)),
            _ => (s, None),
        }
    };
    if host.is_empty() {
        return Err("missing host".into());
    }
    let port = match (port, default_port) {
        (Some(p), _) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("invalid port '{p}'"))?,
        (None, Some(d)) => d,
        (None, None) => return Err("expected HOST:PORT".into()),
    };
    Ok((host.to_string(), port))
}

/// Bounds of one probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeLimits {
    pub connect_timeout: Duration,
    /// Per read/write.
    pub io_timeout: Duration,
    /// Whole probe, handshake and response included.
    pub deadline: Duration,
    /// Bytes of HTTP response (headers and body) accepted from `/ca.crt`.
    pub max_response: usize,
    /// Host-name resolution (part of the deadline).
    pub resolve_timeout: Duration,
}

impl Default for ProbeLimits {
    fn default() -> Self {
        ProbeLimits {
            connect_timeout: Duration::from_secs(3),
            io_timeout: Duration::from_secs(3),
            deadline: Duration::from_secs(10),
            max_response: 64 * 1024,
            resolve_timeout: Duration::from_secs(3),
        }
    }
}

/// What a successful probe saw.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProbeFinding {
    /// The CA certificate itself: the `/ca.crt` body, or the chain element that issued the leaf.
    pub ca: Option<CaIdentity>,
    /// The key id of the CA that issued the presented leaf (its AKI), for chain probes.
    pub issuer_key_id: Option<KeyId>,
    /// Subject and key of the presented leaf, for chain probes.
    pub leaf: Option<CaIdentity>,
    /// Certificates the server presented (chain probe).
    pub chain_len: usize,
    /// How the server answered after the handshake (e.g. "rejected: certificate required").
    pub note: Option<String>,
}

impl ProbeFinding {
    /// The CA as the detector compares it.
    pub fn presented(&self) -> Option<PresentedCa> {
        if let Some(ca) = &self.ca {
            return Some(PresentedCa::from_identity(ca));
        }
        self.issuer_key_id
            .as_ref()
            .map(|k| PresentedCa::from_key_id(k.clone()))
    }

    /// The CA key id this finding names.
    pub fn ca_key_id(&self) -> Option<&str> {
        self.ca
            .as_ref()
            .map(|c| c.key_id.as_str())
            .or(self.issuer_key_id.as_deref())
    }
}

/// The result of one probe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProbeResult {
    pub target: ProbeTarget,
    /// The address connected to.
    pub addr: Option<SocketAddr>,
    /// The probe's own address (its connection shows up in a live capture; the detector skips it).
    pub local: Option<SocketAddr>,
    pub elapsed_ms: u64,
    /// What it read, or why it failed. Serialized as `"finding": {…}` or `"error": "…"`.
    #[serde(flatten, serialize_with = "serialize_outcome")]
    pub outcome: Result<ProbeFinding, String>,
}

fn serialize_outcome<S: serde::Serializer>(
    outcome: &Result<ProbeFinding, String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap as _;
    let mut m = s.serialize_map(Some(2))?;
    match outcome {
        Ok(f) => {
            m.serialize_entry("ok", &true)?;
            m.serialize_entry("finding", f)?;
        }
        Err(e) => {
            m.serialize_entry("ok", &false)?;
            m.serialize_entry("error", e)?;
        }
    }
    m.end()
}

/// The latest result of one target and its totals.
#[derive(Clone, Debug)]
pub struct ProbeStatus {
    pub last: ProbeResult,
    /// Probes of this target completed.
    pub runs: u64,
    /// Of them, failed ones.
    pub failures: u64,
}

/// Runs the probe `target.kind` names.
pub fn run(
    target: &ProbeTarget,
    limits: &ProbeLimits,
    on_connect: &mut dyn FnMut(SocketAddr),
) -> ProbeResult {
    match target.kind {
        ProbeKind::CaEndpoint => probe_ca(target, limits, on_connect),
        ProbeKind::Chain => probe_chain(target, limits, on_connect),
    }
}

/// `GET /ca.crt` without a client certificate; the body is the CA (DER, PEM accepted).
/// `on_connect` gets the local address as soon as TCP connects (before any TLS byte is sent), so a
/// live detector can exclude the probe's own connection from the passive figures.
pub fn probe_ca(
    target: &ProbeTarget,
    limits: &ProbeLimits,
    on_connect: &mut dyn FnMut(SocketAddr),
) -> ProbeResult {
    with_session(target, limits, on_connect, |tls, _chain, deadline| {
        let req = format!(
            "GET /ca.crt HTTP/1.1\r\nHost: {}\r\nUser-Agent: trustwatch-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n",
            target.authority()
        );
        tls.write_all(req.as_bytes())
            .map_err(|e| format!("send request: {e}"))?;
        tls.flush().map_err(|e| format!("send request: {e}"))?;
        let raw = read_capped(tls, limits.max_response, deadline)?;
        let body = http_body(&raw)?;
        let ca = super::parse_certificates(&body)
            .into_iter()
            .next()
            .ok_or_else(|| {
                format!(
                    "/ca.crt: {} bytes that are not a DER or PEM certificate",
                    body.len()
                )
            })?;
        Ok(ProbeFinding {
            ca: Some(ca),
            issuer_key_id: None,
            leaf: None,
            chain_len: 0,
            note: None,
        })
    })
}

/// A handshake without a client certificate, only to record the presented chain.
pub fn probe_chain(
    target: &ProbeTarget,
    limits: &ProbeLimits,
    on_connect: &mut dyn FnMut(SocketAddr),
) -> ProbeResult {
    with_session(target, limits, on_connect, |tls, chain, deadline| {
        // A server requiring a client certificate rejects us only after our Finished (TLS 1.3):
        // one short read tells whether it did. The chain is recorded either way.
        let mut note = None;
        if Instant::now() < deadline {
            let mut buf = [0u8; 1];
            let _ = tls
                .sock
                .set_read_timeout(Some(limits.io_timeout.min(Duration::from_millis(500))));
            match tls.read(&mut buf) {
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut => {}
                Err(e) => note = Some(format!("server closed after handshake: {e}")),
                Ok(_) => {}
            }
        }
        finding_from_chain(chain, note)
    })
}

fn finding_from_chain(chain: Vec<Vec<u8>>, note: Option<String>) -> Result<ProbeFinding, String> {
    let leaf_der = chain.first().ok_or("server presented no certificate")?;
    let parsed = crate::cert::parse(leaf_der);
    let leaf = parsed.info().map(CaIdentity::from_info);
    let issuer_key_id = parsed.info().and_then(|i| i.aki.clone());
    // The issuing CA, when the chain carries it: the element whose key id the leaf's AKI names.
    let ca = chain
        .iter()
        .skip(1)
        .filter_map(|d| CaIdentity::from_der(d))
        .find(|c| issuer_key_id.as_ref().is_some_and(|aki| c.has_key_id(aki)));
    Ok(ProbeFinding {
        ca,
        issuer_key_id,
        leaf,
        chain_len: chain.len(),
        note,
    })
}

type Tls = rustls::StreamOwned<ClientConnection, TcpStream>;

/// Connects, completes the TLS handshake (recording the chain), then runs `f`.
fn with_session(
    target: &ProbeTarget,
    limits: &ProbeLimits,
    on_connect: &mut dyn FnMut(SocketAddr),
    f: impl FnOnce(&mut Tls, Vec<Vec<u8>>, Instant) -> Result<ProbeFinding, String>,
) -> ProbeResult {
    let started = Instant::now();
    let deadline = started + limits.deadline;
    let mut addr = None;
    let mut local = None;
    let outcome = (|| {
        let a = resolve(target, limits)?;
        addr = Some(a);
        let sock = TcpStream::connect_timeout(&a, limits.connect_timeout)
            .map_err(|e| format!("connect {a}: {e}"))?;
        local = sock.local_addr().ok();
        if let Some(l) = local {
            on_connect(l);
        }
        sock.set_read_timeout(Some(limits.io_timeout))
            .map_err(|e| e.to_string())?;
        sock.set_write_timeout(Some(limits.io_timeout))
            .map_err(|e| e.to_string())?;
        let _ = sock.set_nodelay(true);
        let recorder = Arc::new(Recorder::new());
        let config = client_config(recorder.clone())?;
        let name = server_name(crate::config::PROBE_SNI)?;
        let conn =
            ClientConnection::new(Arc::new(config), name).map_err(|e| format!("tls: {e}"))?;
        let mut tls = rustls::StreamOwned::new(conn, sock);
        let handshake = (|| {
            while tls.conn.is_handshaking() {
                if Instant::now() >= deadline {
                    return Err("deadline exceeded during handshake".to_string());
                }
                tls.conn
                    .complete_io(&mut tls.sock)
                    .map_err(|e| format!("handshake: {e}"))?;
            }
            Ok(())
        })();
        let chain = recorder.take();
        match handshake {
            Ok(()) => {}
            // The chain arrived before the failure: a chain probe still has what it came for.
            Err(e) if target.kind == ProbeKind::Chain && !chain.is_empty() => {
                return finding_from_chain(chain, Some(e));
            }
            Err(e) => return Err(e),
        }
        let result = f(&mut tls, chain, deadline);
        tls.conn.send_close_notify();
        let _ = tls.conn.complete_io(&mut tls.sock);
        result
    })();
    ProbeResult {
        target: target.clone(),
        addr,
        local,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        outcome,
    }
}

/// The address to connect to: the pinned one, the literal one, or the first the name resolves to
/// (within the resolve timeout).
fn resolve(target: &ProbeTarget, limits: &ProbeLimits) -> Result<SocketAddr, String> {
    if let Some(ip) = target.addr {
        return Ok(SocketAddr::new(ip, target.port));
    }
    let timeout = limits.resolve_timeout.min(limits.deadline);
    let first = resolve_all(&target.host, target.port, timeout, 1)?;
    first
        .first()
        .map(|ip| SocketAddr::new(*ip, target.port))
        .ok_or_else(|| format!("resolve {}: no address", target.host))
}

fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string()).map_err(|e| format!("server name {host}: {e}"))
}

fn client_config(recorder: Arc<Recorder>) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(RecordingVerifier {
        provider: provider.clone(),
        recorder,
    });
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls config: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// Reads until EOF, the cap or the deadline.
fn read_capped(tls: &mut Tls, cap: usize, deadline: Instant) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if Instant::now() >= deadline {
            return Err("deadline exceeded reading the response".into());
        }
        match tls.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => {
                out.extend_from_slice(buf.get(..n).unwrap_or_default());
                if out.len() > cap {
                    return Err(format!("response larger than {cap} bytes"));
                }
                if response_complete(&out) {
                    return Ok(out);
                }
            }
            // Peers that close without close_notify: the body length check below decides.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(out),
            Err(e) => return Err(format!("read response: {e}")),
        }
    }
}

/// A response with a Content-Length whose body has fully arrived.
fn response_complete(raw: &[u8]) -> bool {
    let Some((head, body)) = split_head(raw) else {
        return false;
    };
    content_length(head).is_some_and(|n| body.len() >= n)
}

fn split_head(raw: &[u8]) -> Option<(&str, &[u8])> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(raw.get(..end)?).ok()?;
    Some((head, raw.get(end + 4..)?))
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

fn content_length(head: &str) -> Option<usize> {
    header(head, "content-length")?.parse().ok()
}

/// The body of a complete HTTP/1.1 200 response (Content-Length, chunked, or to EOF).
fn http_body(raw: &[u8]) -> Result<Vec<u8>, String> {
    let (head, body) = split_head(raw).ok_or("no complete HTTP response header")?;
    let status = head.lines().next().unwrap_or_default();
    let code = status.split_whitespace().nth(1).unwrap_or_default();
    if !status.starts_with("HTTP/1.") || code != "200" {
        return Err(format!(
            "/ca.crt: '{}'",
            status.chars().take(80).collect::<String>()
        ));
    }
    if header(head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        return dechunk(body);
    }
    match content_length(head) {
        Some(n) => body
            .get(..n)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| format!("body truncated: {} of {n} bytes", body.len())),
        None => Ok(body.to_vec()),
    }
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunked body")?;
        let size_line = std::str::from_utf8(body.get(..eol).unwrap_or_default())
            .map_err(|_| "bad chunk size")?;
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| "bad chunk size")?;
        let start = eol + 2;
        if size == 0 {
            return Ok(out);
        }
        let chunk = body
            .get(start..start.saturating_add(size))
            .ok_or("chunked body truncated")?;
        out.extend_from_slice(chunk);
        body = body
            .get(start + size + 2..)
            .ok_or("chunked body truncated")?;
    }
}

/// Holds the chain the server presented.
struct Recorder(Mutex<Vec<Vec<u8>>>);

impl Recorder {
    fn new() -> Self {
        Recorder(Mutex::new(Vec::new()))
    }
    fn take(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Accepts any server certificate (as `keadm join` does before it compares the CA hash) and records
/// the chain. Handshake signatures are still verified, so the peer proved it holds the leaf's key.
#[derive(Debug)]
struct RecordingVerifier {
    provider: Arc<CryptoProvider>,
    recorder: Arc<Recorder>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Recorder")
    }
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = self
            .recorder
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        chain.clear();
        chain.push(end_entity.to_vec());
        chain.extend(intermediates.iter().take(16).map(|c| c.to_vec()));
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// When to probe: every `interval`, and as soon as possible after [`ProbeScheduler::trigger`] but
/// never sooner than `min_gap` after the previous probe of the same target; one probe in flight
/// per target.
///
/// Targets given by host name are resolved in the background (at start, then every `interval`, or
/// sooner after a trigger) and expand into one target per address ([`ProbeTarget::at`]), at most
/// `max_addresses` per name; an address already probed through another target of the same kind
/// and port is not probed twice. A resolution that fails or takes longer than `resolve_timeout`
/// keeps the previous addresses and hands out the name itself once, so that its probe reports the
/// resolution error.
#[derive(Debug)]
pub struct ProbeScheduler {
    targets: Vec<Slot>,
    names: Vec<Name>,
    pub interval: Duration,
    pub min_gap: Duration,
    pub resolve_timeout: Duration,
    pub max_addresses: usize,
    resolver: Resolver,
}

#[derive(Debug)]
struct Slot {
    target: ProbeTarget,
    last_start: Option<Instant>,
    in_flight: bool,
    triggered: bool,
    /// Its address vanished from the name's answer while its probe was in flight: removed when
    /// that probe completes.
    retired: bool,
}

impl Slot {
    fn new(target: ProbeTarget) -> Slot {
        Slot {
            target,
            last_start: None,
            in_flight: false,
            triggered: false,
            retired: false,
        }
    }

    /// The address probed, when known without resolving.
    fn ip(&self) -> Option<IpAddr> {
        self.target
            .addr
            .or_else(|| self.target.host.parse::<IpAddr>().ok())
    }
}

/// A target given by host name.
#[derive(Debug)]
struct Name {
    target: ProbeTarget,
    pending: Option<Pending>,
    last_start: Option<Instant>,
    triggered: bool,
    /// A resolution failed: hand out the name once so its probe reports the error.
    report: bool,
    report_in_flight: bool,
}

#[derive(Debug)]
struct Pending {
    rx: Receiver<Resolution>,
    started: Instant,
    timed_out: bool,
}

/// A host-name resolver (the system's by default; tests substitute their own).
pub type ResolveFn = Arc<dyn Fn(&str, u16) -> Resolution + Send + Sync>;

struct Resolver(Option<ResolveFn>);

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Resolver(custom)"
        } else {
            "Resolver(system)"
        })
    }
}

impl Resolver {
    fn start(&self, host: &str, port: u16) -> Result<Receiver<Resolution>, String> {
        let Some(f) = &self.0 else {
            return spawn_resolve(host, port);
        };
        let (tx, rx) = mpsc::channel();
        let (f, name) = (f.clone(), host.to_string());
        std::thread::Builder::new()
            .name("probe-resolve".into())
            .spawn(move || {
                let _ = tx.send(f(&name, port));
            })
            .map_err(|e| format!("resolve {host}: cannot start the resolver thread: {e}"))?;
        Ok(rx)
    }
}

impl ProbeScheduler {
    pub fn new(targets: Vec<ProbeTarget>, interval: Duration, min_gap: Duration) -> Self {
        let mut slots = Vec::new();
        let mut names = Vec::new();
        for target in targets {
            if target.addr.is_none() && target.is_name() {
                names.push(Name {
                    target,
                    pending: None,
                    last_start: None,
                    triggered: false,
                    report: false,
                    report_in_flight: false,
                });
            } else {
                slots.push(Slot::new(target));
            }
        }
        ProbeScheduler {
            targets: slots,
            names,
            interval,
            min_gap,
            resolve_timeout: ProbeLimits::default().resolve_timeout,
            max_addresses: 64,
            resolver: Resolver(None),
        }
    }

    /// Resolves host names with `f` instead of the system resolver.
    pub fn with_resolver(mut self, f: ResolveFn) -> Self {
        self.resolver = Resolver(Some(f));
        self
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty() && self.names.is_empty()
    }

    /// The targets probed now: addresses (configured, or current answers of the names) and the
    /// names themselves. Results of targets not listed here are stale (a vanished replica).
    pub fn targets(&self) -> Vec<ProbeTarget> {
        self.targets
            .iter()
            .filter(|s| !s.retired)
            .map(|s| s.target.clone())
            .chain(self.names.iter().map(|n| n.target.clone()))
            .collect()
    }

    /// Failures started (see [`crate::detect::Detector::take_probe_request`]): probe every target
    /// soon, and resolve every name again.
    pub fn trigger(&mut self) {
        for s in &mut self.targets {
            s.triggered = true;
        }
        for n in &mut self.names {
            n.triggered = true;
        }
    }

    /// Targets to probe now; each is marked in flight until [`ProbeScheduler::completed`]. Never
    /// blocks: name resolutions run on their own threads and are collected here.
    pub fn due(&mut self, now: Instant) -> Vec<ProbeTarget> {
        let mut out = Vec::new();
        for i in 0..self.names.len() {
            if let Some(addrs) = self.poll_name(i, now) {
                self.follow(i, addrs);
            }
            let n = &mut self.names[i];
            if n.report && !n.report_in_flight {
                n.report = false;
                n.report_in_flight = true;
                out.push(n.target.clone());
            }
        }
        for s in &mut self.targets {
            if s.in_flight || s.retired {
                continue;
            }
            let since = s.last_start.map(|t| now.saturating_duration_since(t));
            let go = match since {
                None => true,
                Some(d) => d >= self.interval || (s.triggered && d >= self.min_gap),
            };
            if go {
                s.in_flight = true;
                s.triggered = false;
                s.last_start = Some(now);
                out.push(s.target.clone());
            }
        }
        out
    }

    /// Collects the answer of name `i` (or notices its timeout) and starts its next resolution
    /// when due. Returns the addresses of a new answer.
    fn poll_name(&mut self, i: usize, now: Instant) -> Option<Vec<IpAddr>> {
        let (interval, min_gap, timeout) = (self.interval, self.min_gap, self.resolve_timeout);
        let n = &mut self.names[i];
        let mut answer = None;
        if let Some(p) = &mut n.pending {
            match p.rx.try_recv() {
                Ok(Ok(addrs)) => {
                    answer = Some(addrs);
                    n.pending = None;
                }
                Ok(Err(_)) | Err(TryRecvError::Disconnected) => {
                    n.report = true;
                    n.pending = None;
                }
                Err(TryRecvError::Empty) => {
                    // Still waiting: past the timeout it counts as failed (reported once); a late
                    // answer is still used, and no second resolution of this name starts meanwhile.
                    if !p.timed_out && now.saturating_duration_since(p.started) >= timeout {
                        p.timed_out = true;
                        n.report = true;
                    }
                }
            }
        }
        if n.pending.is_none() {
            let since = n.last_start.map(|t| now.saturating_duration_since(t));
            let go = match since {
                None => true,
                Some(d) => d >= interval || (n.triggered && d >= min_gap),
            };
            if go {
                n.last_start = Some(now);
                n.triggered = false;
                match self.resolver.start(&n.target.host, n.target.port) {
                    Ok(rx) => {
                        n.pending = Some(Pending {
                            rx,
                            started: now,
                            timed_out: false,
                        });
                    }
                    Err(_) => n.report = true,
                }
            }
        }
        answer
    }

    /// Makes the address targets of name `i` those of `addrs`: new addresses are probed at once,
    /// vanished ones dropped (after their probe in flight completes).
    fn follow(&mut self, i: usize, mut addrs: Vec<IpAddr>) {
        let name = self.names[i].target.clone();
        let of_name = |t: &ProbeTarget| {
            t.addr.is_some() && t.kind == name.kind && t.host == name.host && t.port == name.port
        };
        // Addresses probed through another target already (e.g. the node's own address).
        let elsewhere: Vec<IpAddr> = self
            .targets
            .iter()
            .filter(|s| !of_name(&s.target) && s.target.kind == name.kind)
            .filter(|s| s.target.port == name.port)
            .filter_map(Slot::ip)
            .collect();
        addrs.retain(|a| !elsewhere.contains(a));
        addrs.truncate(self.max_addresses.max(1));
        self.targets.retain_mut(|s| {
            if !of_name(&s.target) || s.ip().is_some_and(|ip| addrs.contains(&ip)) {
                return true;
            }
            if s.in_flight {
                s.retired = true;
                return true;
            }
            false
        });
        for a in addrs {
            let t = name.at(a);
            match self.targets.iter_mut().find(|s| s.target == t) {
                Some(s) => s.retired = false,
                None => self.targets.push(Slot::new(t)),
            }
        }
    }

    /// The probe of `target` finished (whatever its outcome).
    pub fn completed(&mut self, target: &ProbeTarget) {
        for n in self.names.iter_mut().filter(|n| n.target == *target) {
            n.report_in_flight = false;
        }
        for s in self.targets.iter_mut().filter(|s| s.target == *target) {
            s.in_flight = false;
        }
        self.targets
            .retain(|s| !(s.retired && !s.in_flight && s.target == *target));
    }
}

#[cfg(test)]
mod tests;
