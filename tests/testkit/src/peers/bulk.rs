//! A mutual-TLS session that moves a lot of data after its handshake (rustls, in threads), as an
//! edge's long-lived websocket does.
//!
//! The client sends a 16-byte request (bytes up, bytes down: u64 big-endian), then `up` bytes;
//! the server reads them and answers with `down` bytes; both send close_notify. The payload is a
//! deterministic pseudo-random stream, and each side hashes what it received, so a test can tell
//! that every byte arrived unchanged ([`BulkResult`]); TLS's AEAD would refuse a changed byte
//! anyway.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};

use super::{ClientOpts, TlsVersion, rustls_peer};
use crate::Result;
use crate::pki::{Ca, Leaf};

/// What one side sent and received.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BulkResult {
    pub sent: u64,
    pub received: u64,
    /// sha256 of the bytes received (the request header excluded).
    pub received_sha256: Vec<u8>,
    /// sha256 of the bytes sent (the request header excluded).
    pub sent_sha256: Vec<u8>,
    pub version: Option<String>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn versions(v: TlsVersion) -> Vec<&'static rustls::SupportedProtocolVersion> {
    match v {
        TlsVersion::V12 => vec![&rustls::version::TLS12],
        TlsVersion::V13 => vec![&rustls::version::TLS13],
    }
}

fn chain(leaf: &Leaf) -> Vec<CertificateDer<'static>> {
    leaf.chain_der()
        .into_iter()
        .map(CertificateDer::from)
        .collect()
}

fn key(leaf: &Leaf) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_der.clone()))
}

fn roots(ca: &Ca) -> Result<Arc<RootCertStore>> {
    let mut r = RootCertStore::empty();
    r.add(CertificateDer::from(ca.root.der.clone()))?;
    Ok(Arc::new(r))
}

/// A deterministic byte stream: a pseudo-random 64 KiB block (xorshift64 from `seed`), with the
/// block's sequence number in its first 8 bytes, so a lost, repeated or reordered block changes
/// the hash. Cheap even unoptimized (the testkit is built without optimization in tests).
struct Pattern {
    block: Vec<u8>,
    n: u64,
}

impl Pattern {
    fn new(seed: u64) -> Pattern {
        let mut x = seed | 1;
        let block = (0..BLOCK / 8)
            .flat_map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()
            })
            .collect();
        Pattern { block, n: 0 }
    }

    fn next(&mut self) -> &[u8] {
        self.n += 1;
        self.block[..8].copy_from_slice(&self.n.to_le_bytes());
        &self.block
    }
}

const BLOCK: usize = 64 << 10;

/// Writes `n` pattern bytes; returns their hash.
fn send(w: &mut impl Write, n: u64, seed: u64) -> std::io::Result<Vec<u8>> {
    let mut pattern = Pattern::new(seed);
    let mut hash = Sha256::new();
    let mut left = n;
    while left > 0 {
        let k = usize::try_from(left.min(BLOCK as u64)).unwrap_or(BLOCK);
        let block = &pattern.next()[..k];
        hash.update(block);
        w.write_all(block)?;
        left -= k as u64;
    }
    w.flush()?;
    Ok(hash.finalize().to_vec())
}

/// Reads exactly `n` bytes (or until EOF when `n` is `None`); returns (count, hash).
fn receive(r: &mut impl Read, n: Option<u64>) -> std::io::Result<(u64, Vec<u8>)> {
    let mut buf = vec![0u8; 64 << 10];
    let mut hash = Sha256::new();
    let mut got = 0u64;
    loop {
        let want = match n {
            Some(n) if got >= n => break,
            Some(n) => usize::try_from((n - got).min(buf.len() as u64)).unwrap_or(buf.len()),
            None => buf.len(),
        };
        match r.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(k) => {
                hash.update(&buf[..k]);
                got += k as u64;
            }
            Err(e) if n.is_none() && e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
    }
    Ok((got, hash.finalize().to_vec()))
}

/// A bulk server for one connection on `listen` (bound when this returns).
pub struct BulkServer {
    pub addr: SocketAddr,
    thread: JoinHandle<std::result::Result<BulkResult, String>>,
}

impl BulkServer {
    pub fn join(self) -> Result<BulkResult> {
        Ok(self.thread.join().map_err(|_| "bulk server panicked")??)
    }
}

/// Starts a server presenting `identity` and requiring a client certificate from `client_ca`.
pub fn server(
    listen: SocketAddr,
    identity: &Leaf,
    client_ca: &Ca,
    version: TlsVersion,
) -> Result<BulkServer> {
    let p = provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(roots(client_ca)?, p.clone()).build()?;
    let cfg = Arc::new(
        ServerConfig::builder_with_provider(p)
            .with_protocol_versions(&versions(version))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain(identity), key(identity))?,
    );
    let listener = TcpListener::bind(listen)?;
    let addr = listener.local_addr()?;
    let thread = std::thread::spawn(move || serve(&listener, cfg).map_err(|e| e.to_string()));
    Ok(BulkServer { addr, thread })
}

fn serve(listener: &TcpListener, cfg: Arc<ServerConfig>) -> Result<BulkResult> {
    let (tcp, _) = listener.accept()?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    let conn = rustls::ServerConnection::new(cfg)?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let mut hdr = [0u8; 16];
    s.read_exact(&mut hdr)?;
    let up = u64::from_be_bytes(hdr[..8].try_into()?);
    let down = u64::from_be_bytes(hdr[8..].try_into()?);
    let (received, received_sha256) = receive(&mut s, Some(up))?;
    let sent_sha256 = send(&mut s, down, 0x5eed_0002)?;
    let version = s.conn.protocol_version().map(|v| format!("{v:?}"));
    s.conn.send_close_notify();
    s.conn.complete_io(&mut s.sock)?;
    // Until the client's close_notify / FIN.
    let _ = receive(&mut s, None);
    Ok(BulkResult {
        sent: down,
        received,
        received_sha256,
        sent_sha256,
        version,
    })
}

/// Connects from `local_ip` (if set), presents `identity`, trusts `ca`, sends `up` bytes and
/// receives `down`.
pub fn client(
    server: SocketAddr,
    local_ip: Option<IpAddr>,
    ca: &Ca,
    identity: &Leaf,
    version: TlsVersion,
    (up, down): (u64, u64),
) -> Result<BulkResult> {
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&versions(version))?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(chain(identity), key(identity))?;
    cfg.resumption = rustls::client::Resumption::disabled();
    let mut opts = ClientOpts::new(server);
    opts.local_ip = local_ip;
    let tcp = rustls_peer::connect_tcp(&opts)?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    let name = ServerName::try_from(server.ip().to_string())?;
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name)?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let mut hdr = [0u8; 16];
    hdr[..8].copy_from_slice(&up.to_be_bytes());
    hdr[8..].copy_from_slice(&down.to_be_bytes());
    s.write_all(&hdr)?;
    let sent_sha256 = send(&mut s, up, 0x5eed_0001)?;
    let (received, received_sha256) = receive(&mut s, Some(down))?;
    let version = s.conn.protocol_version().map(|v| format!("{v:?}"));
    s.conn.send_close_notify();
    s.conn.complete_io(&mut s.sock)?;
    Ok(BulkResult {
        sent: up,
        received,
        received_sha256,
        sent_sha256,
        version,
    })
}
