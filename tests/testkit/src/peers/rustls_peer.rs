//! rustls server and client (ring provider) in threads over std `TcpStream`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, HandshakeKind, RootCertStore, ServerConfig, SupportedProtocolVersion};
use socket2::{Domain, Socket, Type};

use super::{ClientOpts, PeerResult, TlsVersion};
use crate::Result;
use crate::pki::Leaf;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn versions(v: Option<TlsVersion>) -> Vec<&'static SupportedProtocolVersion> {
    match v {
        Some(TlsVersion::V12) => vec![&rustls::version::TLS12],
        Some(TlsVersion::V13) => vec![&rustls::version::TLS13],
        None => vec![&rustls::version::TLS13, &rustls::version::TLS12],
    }
}

fn version_name(v: Option<rustls::ProtocolVersion>) -> Option<String> {
    match v? {
        rustls::ProtocolVersion::TLSv1_2 => Some("1.2".into()),
        rustls::ProtocolVersion::TLSv1_3 => Some("1.3".into()),
        other => Some(format!("{other:?}")),
    }
}

fn key_of(leaf: &Leaf) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_der.clone()))
}

fn chain_of(leaf: &Leaf) -> Vec<CertificateDer<'static>> {
    leaf.chain_der()
        .into_iter()
        .map(CertificateDer::from)
        .collect()
}

fn roots(ders: &[&[u8]]) -> Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    for d in ders {
        store.add(CertificateDer::from(d.to_vec()))?;
    }
    Ok(store)
}

/// Server options.
pub struct ServerOpts<'a> {
    pub listen: SocketAddr,
    pub identity: &'a Leaf,
    /// Trust anchors (DER) for client certificates; `None`: no client authentication.
    pub client_roots: Option<Vec<Vec<u8>>>,
    pub version: Option<TlsVersion>,
    /// Number of connections to accept before the thread ends.
    pub accept: usize,
    /// Issue TLS 1.2 session tickets (else 1.2 resumes by session ID).
    pub tickets: bool,
    pub mss: Option<u32>,
    /// Write at most this many bytes per `write` (TCP_NODELAY, a short pause after each), so the
    /// flight leaves in many TCP segments even on `lo`, whose GSO otherwise captures whole
    /// flights as one packet whatever the MSS.
    pub write_chunk: Option<usize>,
}

impl<'a> ServerOpts<'a> {
    pub fn new(identity: &'a Leaf) -> Self {
        ServerOpts {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            identity,
            client_roots: None,
            version: None,
            accept: 1,
            tickets: false,
            mss: None,
            write_chunk: None,
        }
    }
}

/// A rustls server running in a thread; the listener is bound when this exists.
pub struct RustlsServer {
    pub addr: SocketAddr,
    thread: JoinHandle<Vec<PeerResult>>,
}

impl RustlsServer {
    /// Waits for all accepted connections to finish.
    pub fn join(self) -> Vec<PeerResult> {
        self.thread.join().unwrap_or_default()
    }
}

fn listener(addr: SocketAddr, mss: Option<u32>) -> Result<TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    if let Some(m) = mss {
        s.set_tcp_mss(m)?;
    }
    s.bind(&addr.into())?;
    s.listen(16)?;
    Ok(s.into())
}

/// Binds and starts a rustls server that serves `opts.accept` connections: handshake, read a
/// line, answer `pong`, close.
pub fn server(opts: ServerOpts<'_>) -> Result<RustlsServer> {
    let p = provider();
    let builder = ServerConfig::builder_with_provider(p.clone())
        .with_protocol_versions(&versions(opts.version))?;
    let builder = match &opts.client_roots {
        Some(ders) => {
            let refs: Vec<&[u8]> = ders.iter().map(|d| d.as_slice()).collect();
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(&refs)?), p.clone())
                .build()?;
            builder.with_client_cert_verifier(v)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_single_cert(chain_of(opts.identity), key_of(opts.identity))?;
    if opts.tickets {
        cfg.ticketer = rustls::crypto::ring::Ticketer::new()?;
    }
    let cfg = Arc::new(cfg);
    let l = listener(opts.listen, opts.mss)?;
    let addr = l.local_addr()?;
    let accept = opts.accept;
    let chunk = opts.write_chunk;
    let thread = std::thread::spawn(move || {
        let mut results = Vec::new();
        for _ in 0..accept {
            let (tcp, remote) = match l.accept() {
                Ok(x) => x,
                Err(e) => {
                    results.push(PeerResult {
                        error: Some(e.to_string()),
                        ..Default::default()
                    });
                    break;
                }
            };
            let mut r = serve_one(cfg.clone(), tcp, chunk);
            r.remote = Some(remote);
            results.push(r);
        }
        results
    });
    Ok(RustlsServer { addr, thread })
}

/// A stream that writes at most `chunk` bytes per call.
struct Chunked {
    tcp: TcpStream,
    chunk: usize,
}

impl Read for Chunked {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.tcp.read(buf)
    }
}

impl Write for Chunked {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.tcp.write(&buf[..buf.len().min(self.chunk)])?;
        std::thread::sleep(Duration::from_micros(300));
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.tcp.flush()
    }
}

fn serve_one(cfg: Arc<ServerConfig>, tcp: TcpStream, chunk: Option<usize>) -> PeerResult {
    let mut r = PeerResult {
        local: tcp.local_addr().ok(),
        ..Default::default()
    };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
    if chunk.is_some() {
        let _ = tcp.set_nodelay(true);
    }
    let mut tcp = Chunked {
        tcp,
        chunk: chunk.unwrap_or(usize::MAX),
    };
    let mut conn = match rustls::ServerConnection::new(cfg) {
        Ok(c) => c,
        Err(e) => {
            r.error = Some(e.to_string());
            return r;
        }
    };
    if !handshake(&mut *conn, &mut tcp, &mut r) {
        return r;
    }
    let mut s = rustls::Stream::new(&mut conn, &mut tcp);
    let mut buf = [0u8; 64];
    let res = s
        .read(&mut buf)
        .and_then(|_| s.write_all(b"pong\n"))
        .and_then(|_| s.flush());
    match res {
        Ok(()) => r.ok = true,
        Err(e) => r.error = Some(e.to_string()),
    }
    conn.send_close_notify();
    let _ = conn.complete_io(&mut tcp);
    r
}

/// Client identity and trust.
pub struct ClientAuth<'a> {
    /// Trust anchors (DER) for the server chain.
    pub roots: Vec<&'a [u8]>,
    /// The client certificate to present, if any.
    pub identity: Option<&'a Leaf>,
}

/// Runs `opts.attempts` client connections: handshake, send `ping`, read the answer, close.
pub fn client(opts: &ClientOpts, auth: &ClientAuth<'_>) -> Result<Vec<PeerResult>> {
    let p = provider();
    let builder = ClientConfig::builder_with_provider(p)
        .with_protocol_versions(&versions(opts.version))?
        .with_root_certificates(roots(&auth.roots)?);
    let mut cfg = match auth.identity {
        Some(leaf) => builder.with_client_auth_cert(chain_of(leaf), key_of(leaf))?,
        None => builder.with_no_client_auth(),
    };
    if !opts.resume {
        cfg.resumption = rustls::client::Resumption::disabled();
    }
    let cfg = Arc::new(cfg);
    let name = ServerName::try_from(opts.server_name.clone())?;
    let mut results = Vec::new();
    for i in 0..opts.attempts {
        if i > 0 && !opts.interval.is_zero() {
            std::thread::sleep(opts.interval);
        }
        results.push(client_once(cfg.clone(), name.clone(), opts));
    }
    Ok(results)
}

/// A TCP connection from `local_ip` (if set) with the MSS clamped (if set).
pub fn connect_tcp(opts: &ClientOpts) -> std::io::Result<TcpStream> {
    let s = Socket::new(Domain::for_address(opts.connect), Type::STREAM, None)?;
    if let Some(m) = opts.mss {
        s.set_tcp_mss(m)?;
    }
    if let Some(ip) = opts.local_ip {
        s.bind(&SocketAddr::new(ip, 0).into())?;
    }
    s.connect_timeout(&opts.connect.into(), Duration::from_secs(5))?;
    let tcp: TcpStream = s.into();
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(tcp)
}

fn client_once(cfg: Arc<ClientConfig>, name: ServerName<'static>, opts: &ClientOpts) -> PeerResult {
    let mut r = PeerResult::default();
    let mut tcp = match connect_tcp(opts) {
        Ok(t) => t,
        Err(e) => {
            r.error = Some(e.to_string());
            return r;
        }
    };
    r.local = tcp.local_addr().ok();
    r.remote = tcp.peer_addr().ok();
    let mut conn = match rustls::ClientConnection::new(cfg, name) {
        Ok(c) => c,
        Err(e) => {
            r.error = Some(e.to_string());
            return r;
        }
    };
    if !handshake(&mut *conn, &mut tcp, &mut r) {
        return r;
    }
    let mut s = rustls::Stream::new(&mut conn, &mut tcp);
    let mut buf = [0u8; 64];
    let res = s
        .write_all(b"ping\n")
        .and_then(|_| s.flush())
        .and_then(|_| s.read(&mut buf));
    match res {
        Ok(n) if n > 0 => r.ok = true,
        Ok(_) => r.error = Some("connection closed before the answer".into()),
        Err(e) => r.error = Some(e.to_string()),
    }
    conn.send_close_notify();
    let _ = conn.complete_io(&mut tcp);
    r
}

/// Drives the handshake of either side to the end and records its result in `r`; false (with
/// `r.error`) when it failed.
fn handshake<D>(
    conn: &mut rustls::ConnectionCommon<D>,
    tcp: &mut (impl Read + Write),
    r: &mut PeerResult,
) -> bool {
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(tcp) {
            r.error = Some(e.to_string());
            return false;
        }
    }
    r.handshake_ok = true;
    r.version = version_name(conn.protocol_version());
    r.resumed = conn.handshake_kind() == Some(HandshakeKind::Resumed);
    true
}

/// How a client abandons a handshake once the server's flight is in (an application that gives
/// up: a timeout, a killed process, a user who cancels).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HangUp {
    /// Drops the connection: rustls sends nothing for a handshake it never finished, the
    /// socket's FIN is all the server sees.
    Bare,
    /// First the plaintext warnings RFC 8446 §6.1 asks of a side that abandons a handshake
    /// (user_canceled, then close_notify), then the FIN.
    Warning,
}

/// One rustls client connection that reads the server's whole first flight (rustls has its
/// answer ready) and then hangs up `how`, without sending that answer.
pub fn client_hang_up(opts: &ClientOpts, roots_der: &[&[u8]], how: HangUp) -> Result<PeerResult> {
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&versions(opts.version))?
        .with_root_certificates(roots(roots_der)?)
        .with_no_client_auth();
    let name = ServerName::try_from(opts.server_name.clone())?;
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name)?;
    let mut tcp = connect_tcp(opts)?;
    let mut r = PeerResult {
        local: tcp.local_addr().ok(),
        remote: tcp.peer_addr().ok(),
        ..Default::default()
    };
    // The ClientHello.
    while conn.wants_write() {
        conn.write_tls(&mut tcp)?;
    }
    // The server's flight, until rustls has its own next flight to send.
    while !conn.wants_write() {
        if conn.read_tls(&mut tcp)? == 0 {
            r.error = Some("server closed first".into());
            return Ok(r);
        }
        conn.process_new_packets()?;
    }
    // Corked, the alerts and the FIN leave in one segment: a server that closes as soon as it
    // reads close_notify cannot send its FIN before ours (a preemption between the write and
    // the shutdown let it, once in CI).
    socket2::SockRef::from(&tcp).set_tcp_cork(true)?;
    if how == HangUp::Warning {
        // level 1 (warning): user_canceled(90), then close_notify(0).
        tcp.write_all(&[21, 3, 3, 0, 2, 1, 90, 21, 3, 3, 0, 2, 1, 0])?;
    }
    tcp.shutdown(std::net::Shutdown::Write)?;
    // Wait for the server to close its side, so the capture holds both FINs.
    let mut buf = [0u8; 4096];
    while matches!(tcp.read(&mut buf), Ok(n) if n > 0) {}
    r.error = Some(format!("hung up ({how:?})"));
    Ok(r)
}
