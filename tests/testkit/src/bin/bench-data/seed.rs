//! Seed captures: real TLS sessions between rustls and Go (crypto/tls) peers over loopback,
//! recorded with libpcap.
//!
//! Consumes nothing; produces four pcaps in a directory, each the full TCP lifetime of every
//! connection: `seed-hs12.pcap` (TLS 1.2 mutual-TLS handshakes + a ping/pong), `seed-hs13.pcap`
//! (the same in TLS 1.3), `seed-bulk12.pcap` and `seed-bulk13.pcap` (mutual-TLS sessions that
//! then move 1–4 MiB of application data). Every certificate chain on the wire is leaf → intermediate → root, on
//! both sides. Every peer must report success, or the seed is refused.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use trustwatch_testkit::Result;
use trustwatch_testkit::capture::Capture;
use trustwatch_testkit::peers::{self, ClientOpts, PeerResult, Stack, TlsVersion, rustls_peer};
use trustwatch_testkit::pki::{Ca, Leaf, Pki};

/// The seed files in `dir`.
pub struct SeedFiles {
    pub hs12: PathBuf,
    pub hs13: PathBuf,
    pub bulk12: PathBuf,
    pub bulk13: PathBuf,
}

impl SeedFiles {
    pub fn in_dir(dir: &Path) -> Self {
        SeedFiles {
            hs12: dir.join("seed-hs12.pcap"),
            hs13: dir.join("seed-hs13.pcap"),
            bulk12: dir.join("seed-bulk12.pcap"),
            bulk13: dir.join("seed-bulk13.pcap"),
        }
    }
    pub fn exist(&self) -> bool {
        [&self.hs12, &self.hs13, &self.bulk12, &self.bulk13]
            .iter()
            .all(|p| p.exists())
    }
}

/// Handshake-only connections per client stack and server stack, per TLS version.
const HS_PER_PAIR_12: usize = 60;
const HS_PER_PAIR_13: usize = 20;
/// (bytes client → server, bytes server → client) of the bulk sessions of each TLS version.
const BULK: [(usize, usize); 6] = [
    (64 << 10, 1 << 20),
    (256 << 10, 2 << 20),
    (32 << 10, 3 << 20),
    (1 << 20, 4 << 20),
    (128 << 10, 1536 << 10),
    (512 << 10, 2560 << 10),
];

/// The PKI of the seed: one root → intermediate, a CloudCore server leaf and a few edge leaves,
/// each presenting leaf → intermediate → root.
struct Identities {
    _pki: Pki,
    root: Ca,
    server: Leaf,
    edges: Vec<Leaf>,
}

/// Makes `leaf` present its root too (3 certificates on the wire), for rustls and Go alike.
fn with_root(pki: &Pki, mut leaf: Leaf) -> Result<Leaf> {
    leaf.chain.push(leaf.root.clone());
    let pem: String = leaf.chain.iter().map(|c| c.pem.as_str()).collect();
    let path = pki
        .dir()
        .join(format!("{}-chain3.pem", leaf.cert.subject_cn));
    std::fs::write(&path, pem)?;
    leaf.chain_path = path;
    Ok(leaf)
}

fn identities() -> Result<Identities> {
    let pki = Pki::new()?;
    let root = pki.root_ca("KubeEdge Bench Root CA", None, 0)?;
    let ica = pki.intermediate(&root, "KubeEdge Bench Intermediate CA", 0)?;
    let server = with_root(&pki, pki.server_leaf(&ica)?)?;
    let mut edges = Vec::new();
    for i in 0..4 {
        edges.push(with_root(
            &pki,
            pki.client_leaf(&ica, &format!("edge-node-{i:02}"))?,
        )?);
    }
    Ok(Identities {
        _pki: pki,
        root,
        server,
        edges,
    })
}

fn require_ok(what: &str, results: &[PeerResult], expected: usize) -> Result<()> {
    let ok = results.iter().filter(|r| r.ok).count();
    if ok != expected {
        let err = results
            .iter()
            .find_map(|r| r.error.clone())
            .unwrap_or_default();
        return Err(format!("{what}: {ok}/{expected} connections succeeded ({err})").into());
    }
    Ok(())
}

/// Captures `n` handshake-only connections per (server stack, client stack) pair in `version`.
fn capture_handshakes(id: &Identities, out: &Path, version: TlsVersion, n: usize) -> Result<()> {
    let port = trustwatch_testkit::free_port()?;
    let dir = out.parent().unwrap_or(Path::new("."));
    let tmp_name = format!("tmp-{}", std::process::id());
    let cap = Capture::start_port(dir, &tmp_name, port)?;
    for server_stack in [Stack::Rustls, Stack::Go] {
        let spec = peers::ServerSpec::new(server_stack, port, &id.server)
            .client_ca(&id.root)
            .version(version)
            .accept(2 * n);
        let server = peers::start_server(&spec)?;
        for (i, client_stack) in [Stack::Rustls, Stack::Go].into_iter().enumerate() {
            let edge = &id.edges[i % id.edges.len()];
            let opts = ClientOpts::new(SocketAddr::from(([127, 0, 0, 1], port)))
                .version(version)
                .attempts(n, Duration::ZERO);
            let r = peers::run_client(client_stack, &opts, &id.root, Some(edge))?;
            require_ok(
                &format!("{client_stack:?} client → {server_stack:?} server"),
                &r,
                n,
            )?;
        }
        let r = server.join();
        let ok = r.iter().filter(|r| r.ok).count();
        if ok != 2 * n {
            return Err(format!("{server_stack:?} server: {ok}/{} ok", 2 * n).into());
        }
    }
    let c = cap.stop()?;
    std::fs::rename(&c.path, out)?;
    Ok(())
}

fn chain_der(leaf: &Leaf) -> Vec<CertificateDer<'static>> {
    leaf.chain_der()
        .into_iter()
        .map(CertificateDer::from)
        .collect()
}

fn key_der(leaf: &Leaf) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_der.clone()))
}

fn versions(v: TlsVersion) -> Vec<&'static rustls::SupportedProtocolVersion> {
    match v {
        TlsVersion::V12 => vec![&rustls::version::TLS12],
        TlsVersion::V13 => vec![&rustls::version::TLS13],
    }
}

/// Writes `n` bytes in 16 KiB pieces, pausing after every 64 KiB so the capture keeps up.
fn send(w: &mut impl Write, n: usize) -> std::io::Result<()> {
    let piece = [0x5au8; 16 << 10];
    let mut left = n;
    let mut since_pause = 0;
    while left > 0 {
        let k = left.min(piece.len());
        w.write_all(&piece[..k])?;
        left -= k;
        since_pause += k;
        if since_pause >= 64 << 10 {
            w.flush()?;
            std::thread::sleep(Duration::from_micros(400));
            since_pause = 0;
        }
    }
    w.flush()
}

/// Captures the bulk sessions: request header (up, down: u32 BE) + `up` bytes, then `down`
/// bytes back, then close_notify both ways.
fn capture_bulk(id: &Identities, out: &Path, version: TlsVersion) -> Result<()> {
    let port = trustwatch_testkit::free_port()?;
    let dir = out.parent().unwrap_or(Path::new("."));
    let tmp_name = format!("tmp-{}", std::process::id());
    let cap = Capture::start_port(dir, &tmp_name, port)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(id.root.cert.der.clone()))?;
    let roots = Arc::new(roots);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = std::net::TcpListener::bind(addr)?;
    {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone()).build()?;
        let scfg = Arc::new(
            ServerConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&versions(version))?
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain_der(&id.server), key_der(&id.server))?,
        );
        for (i, &(up, down)) in BULK.iter().enumerate() {
            let edge = &id.edges[i % id.edges.len()];
            let mut ccfg = ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&versions(version))?
                .with_root_certificates(roots.clone())
                .with_client_auth_cert(chain_der(edge), key_der(edge))?;
            ccfg.resumption = rustls::client::Resumption::disabled();
            let ccfg = Arc::new(ccfg);
            let scfg = scfg.clone();
            let l = listener.try_clone()?;
            let server = std::thread::spawn(move || -> std::result::Result<(), String> {
                let (tcp, _) = l.accept().map_err(|e| e.to_string())?;
                serve_bulk(scfg, tcp).map_err(|e| e.to_string())
            });
            let client = run_bulk_client(ccfg, addr, up, down);
            let served = server.join().map_err(|_| "bulk server panicked")?;
            client?;
            served?;
        }
    }
    let c = cap.stop()?;
    std::fs::rename(&c.path, out)?;
    Ok(())
}

fn serve_bulk(cfg: Arc<ServerConfig>, tcp: TcpStream) -> Result<()> {
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let conn = rustls::ServerConnection::new(cfg)?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let mut hdr = [0u8; 8];
    s.read_exact(&mut hdr)?;
    let up = u32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
    let down = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]) as usize;
    let mut buf = vec![0u8; 64 << 10];
    let mut got = 0;
    while got < up {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err("client closed early".into());
        }
        got += n;
    }
    send(&mut s, down)?;
    s.conn.send_close_notify();
    s.conn.complete_io(&mut s.sock)?;
    // Wait for the client's close_notify / FIN.
    while s.read(&mut buf).unwrap_or(0) > 0 {}
    Ok(())
}

fn run_bulk_client(cfg: Arc<ClientConfig>, addr: SocketAddr, up: usize, down: usize) -> Result<()> {
    let tcp = rustls_peer::connect_tcp(&ClientOpts::new(addr))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let conn = rustls::ClientConnection::new(cfg, ServerName::try_from("127.0.0.1")?.to_owned())?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let mut hdr = Vec::with_capacity(8);
    hdr.extend_from_slice(&(up as u32).to_be_bytes());
    hdr.extend_from_slice(&(down as u32).to_be_bytes());
    s.write_all(&hdr)?;
    send(&mut s, up)?;
    let mut buf = vec![0u8; 64 << 10];
    let mut got = 0;
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => return Err(e.into()),
        }
    }
    if got != down {
        return Err(format!("bulk client received {got} of {down} bytes").into());
    }
    s.conn.send_close_notify();
    s.conn.complete_io(&mut s.sock)?;
    Ok(())
}

/// Captures the three seed files into `dir` (each written under a temporary name first).
pub fn capture(dir: &Path) -> Result<SeedFiles> {
    std::fs::create_dir_all(dir)?;
    let files = SeedFiles::in_dir(dir);
    let id = identities()?;
    eprintln!("bench-data: capturing real mTLS handshakes (TLS 1.2)");
    capture_handshakes(&id, &files.hs12, TlsVersion::V12, HS_PER_PAIR_12)?;
    eprintln!("bench-data: capturing real mTLS handshakes (TLS 1.3)");
    capture_handshakes(&id, &files.hs13, TlsVersion::V13, HS_PER_PAIR_13)?;
    eprintln!("bench-data: capturing real bulk sessions (TLS 1.2, 1.3)");
    capture_bulk(&id, &files.bulk12, TlsVersion::V12)?;
    capture_bulk(&id, &files.bulk13, TlsVersion::V13)?;
    Ok(files)
}
