//! Real TLS peers over loopback: rustls in threads, the OpenSSL CLI and the Go peer (`tests/go`).
//!
//! Every peer reports what its TLS stack concluded ([`PeerResult`]) so tests know the ground
//! truth of each connection (who failed, with which error) independently of the capture.

pub mod bulk;
pub mod go;
pub mod openssl;
pub mod rustls_peer;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// A TLS protocol version a peer is limited to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsVersion {
    V12,
    V13,
}

impl TlsVersion {
    /// As trustwatch prints it in `tls.version`.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::V12 => "1.2",
            TlsVersion::V13 => "1.3",
        }
    }
}

/// What one side's TLS stack concluded about one connection.
#[derive(Clone, Debug, Default)]
pub struct PeerResult {
    /// The handshake completed and a request/response round trip succeeded.
    pub ok: bool,
    /// This side's handshake completed (in TLS 1.3 a client completes before the server has
    /// checked its certificate).
    pub handshake_ok: bool,
    pub error: Option<String>,
    pub version: Option<String>,
    pub resumed: bool,
    /// The local address of the connection (the client's for client results).
    pub local: Option<SocketAddr>,
    /// The remote address (the client's for server results).
    pub remote: Option<SocketAddr>,
}

/// Options every client flavour understands.
#[derive(Clone, Debug)]
pub struct ClientOpts {
    pub connect: SocketAddr,
    /// Source IP to bind (anything in 127.0.0.0/8), `None` for the default.
    pub local_ip: Option<IpAddr>,
    /// Name to verify (and SNI when it is a DNS name).
    pub server_name: String,
    /// Only this version (`None`: 1.2 and 1.3).
    pub version: Option<TlsVersion>,
    /// Clamp the TCP MSS of the client socket (the server then sends segments of this size).
    pub mss: Option<u32>,
    pub attempts: usize,
    pub interval: Duration,
    /// Reuse sessions across attempts.
    pub resume: bool,
}

impl ClientOpts {
    pub fn new(connect: SocketAddr) -> Self {
        ClientOpts {
            connect,
            local_ip: None,
            server_name: connect.ip().to_string(),
            version: None,
            mss: None,
            attempts: 1,
            interval: Duration::ZERO,
            resume: false,
        }
    }
    pub fn version(mut self, v: TlsVersion) -> Self {
        self.version = Some(v);
        self
    }
    pub fn local_ip(mut self, ip: IpAddr) -> Self {
        self.local_ip = Some(ip);
        self
    }
    pub fn mss(mut self, mss: u32) -> Self {
        self.mss = Some(mss);
        self
    }
    pub fn attempts(mut self, n: usize, interval: Duration) -> Self {
        self.attempts = n;
        self.interval = interval;
        self
    }
    pub fn resume(mut self) -> Self {
        self.resume = true;
        self
    }
}

/// A TLS implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stack {
    Rustls,
    Openssl,
    Go,
}

/// One server, whatever its stack.
pub struct ServerSpec<'a> {
    pub stack: Stack,
    pub listen: SocketAddr,
    pub identity: &'a crate::pki::Leaf,
    /// The CA that verifies client certificates (client authentication required); `None`: off.
    pub client_ca: Option<&'a crate::pki::Ca>,
    /// Only this version (Go: max version, min 1.2).
    pub version: Option<TlsVersion>,
    /// Connections to serve before the server ends.
    pub accept: usize,
    /// rustls: issue TLS 1.2 session tickets (Go always does; OpenSSL by default).
    pub tickets: bool,
    /// rustls and Go: write flights in chunks of this size (many TCP segments even on `lo`).
    pub write_chunk: Option<usize>,
}

impl<'a> ServerSpec<'a> {
    pub fn new(stack: Stack, port: u16, identity: &'a crate::pki::Leaf) -> Self {
        ServerSpec {
            stack,
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            identity,
            client_ca: None,
            version: None,
            accept: 1,
            tickets: false,
            write_chunk: None,
        }
    }
    pub fn client_ca(mut self, ca: &'a crate::pki::Ca) -> Self {
        self.client_ca = Some(ca);
        self
    }
    pub fn version(mut self, v: TlsVersion) -> Self {
        self.version = Some(v);
        self
    }
    pub fn accept(mut self, n: usize) -> Self {
        self.accept = n;
        self
    }
}

/// A running server of any stack.
pub enum Server {
    Rustls(rustls_peer::RustlsServer),
    Openssl(openssl::OpensslServer),
    Go(go::GoServer),
}

impl Server {
    /// Waits for the server to finish its connections (at most a few seconds) and returns what
    /// it concluded. OpenSSL gives a single result whose `error` holds s_server's output.
    pub fn join(self) -> Vec<PeerResult> {
        let t = Duration::from_secs(10);
        match self {
            Server::Rustls(s) => s.join(),
            Server::Go(s) => s.join_results(t),
            Server::Openssl(s) => {
                let out = s.join(t);
                vec![PeerResult {
                    ok: !out.to_lowercase().contains("error"),
                    error: Some(out),
                    ..Default::default()
                }]
            }
        }
    }
}

/// Starts a server; it listens when this returns.
pub fn start_server(spec: &ServerSpec<'_>) -> crate::Result<Server> {
    Ok(match spec.stack {
        Stack::Rustls => {
            let mut o = rustls_peer::ServerOpts::new(spec.identity);
            o.listen = spec.listen;
            o.client_roots = spec.client_ca.map(|ca| vec![ca.root.der.clone()]);
            o.version = spec.version;
            o.accept = spec.accept;
            o.tickets = spec.tickets;
            o.write_chunk = spec.write_chunk;
            Server::Rustls(rustls_peer::server(o)?)
        }
        Stack::Openssl => Server::Openssl(openssl::server(openssl::ServerOpts {
            listen: spec.listen,
            identity: spec.identity,
            client_ca: spec.client_ca.map(|ca| ca.cert_path.clone()),
            version: spec.version,
            accept: spec.accept,
        })?),
        Stack::Go => {
            let mut o = go::ServerOpts::new(spec.listen, spec.identity);
            o.client_ca = spec.client_ca.map(|ca| ca.cert_path.clone());
            o.max_version = spec.version;
            o.accept = spec.accept;
            if let Some(n) = spec.write_chunk {
                o.extra = vec!["-write-chunk".into(), n.to_string()];
            }
            Server::Go(go::server(o)?)
        }
    })
}

/// Runs `opts.attempts` client connections with `stack`, trusting `trust` (a root CA) and
/// presenting `identity` when given.
pub fn run_client(
    stack: Stack,
    opts: &ClientOpts,
    trust: &crate::pki::Ca,
    identity: Option<&crate::pki::Leaf>,
) -> crate::Result<Vec<PeerResult>> {
    match stack {
        Stack::Rustls => rustls_peer::client(
            opts,
            &rustls_peer::ClientAuth {
                roots: vec![&trust.root.der],
                identity,
            },
        ),
        Stack::Go => go::client(opts, &trust.cert_path, identity, None),
        Stack::Openssl => {
            let mut v = Vec::new();
            for i in 0..opts.attempts {
                if i > 0 {
                    std::thread::sleep(opts.interval);
                }
                v.push(openssl::client(opts, &trust.cert_path, identity)?);
            }
            Ok(v)
        }
    }
}

/// The server chain `spec` puts on the wire, in order: the leaf and its intermediates, plus, for
/// OpenSSL, the root when it is in the client-verification CA file (s_server completes its chain
/// from that store — measured, OpenSSL 3.0).
pub fn wire_chain(spec: &ServerSpec<'_>) -> Vec<crate::pki::CertTruth> {
    let mut chain = spec.identity.chain.clone();
    if spec.stack == Stack::Openssl
        && let Some(ca) = spec.client_ca
        && ca.root.sha256 == spec.identity.root.sha256
    {
        chain.push(spec.identity.root.clone());
    }
    chain
}

/// The client chain `stack` puts on the wire for `identity`: the leaf and its intermediates,
/// plus, for OpenSSL, the root when the trust file (`-CAfile`) holds it (s_client completes its
/// chain from that store — measured, OpenSSL 3.0).
pub fn wire_client_chain(
    stack: Stack,
    identity: &crate::pki::Leaf,
    trust: &crate::pki::Ca,
) -> Vec<crate::pki::CertTruth> {
    let mut chain = identity.chain.clone();
    if stack == Stack::Openssl && trust.root.sha256 == identity.root.sha256 {
        chain.push(identity.root.clone());
    }
    chain
}
