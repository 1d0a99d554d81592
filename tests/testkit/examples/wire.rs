//! Prints what each TLS stack puts on the wire in the failure scenarios (ground truth for the
//! analyzer's rules): `cargo run -p trustwatch-testkit --example wire` (as root).

use std::net::{Ipv4Addr, SocketAddr};

use trustwatch_testkit::capture::Capture;
use trustwatch_testkit::peers::{self, ClientOpts, ServerSpec, Stack, TlsVersion};
use trustwatch_testkit::pki::{Ca, Leaf, Pki};
use trustwatch_testkit::tshark::Summary;

fn run(
    name: &str,
    stack: Stack,
    v: TlsVersion,
    server: &Leaf,
    client_ca: &Ca,
    trust: &Ca,
    id: Option<&Leaf>,
) {
    let dir = trustwatch_testkit::tempfile::tempdir().unwrap();
    let port = trustwatch_testkit::free_port().unwrap();
    let cap = Capture::start_port(dir.path(), "x", port).unwrap();
    let srv = peers::start_server(
        &ServerSpec::new(stack, port, server)
            .client_ca(client_ca)
            .version(v),
    )
    .unwrap();
    let opts = ClientOpts::new(SocketAddr::from(([127, 0, 0, 1], port)))
        .local_ip(Ipv4Addr::new(127, 0, 9, 9).into())
        .version(v);
    let client = peers::run_client(stack, &opts, trust, id).unwrap();
    let server = srv.join();
    let c = cap.stop().unwrap();
    let w = Summary::read(&c.path, port).unwrap();
    println!("===== {name}: {stack:?} {v:?}");
    println!(
        "  client: {:?}",
        client
            .iter()
            .map(|r| (r.ok, r.handshake_ok, r.error.clone()))
            .collect::<Vec<_>>()
    );
    let srv_err: Vec<String> = server
        .iter()
        .map(|r| {
            r.error
                .clone()
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("rror") || l.contains("alert"))
                .collect::<Vec<_>>()
                .join(" / ")
        })
        .collect();
    println!(
        "  server: {:?} {:?}",
        server
            .iter()
            .map(|r| (r.ok, r.handshake_ok))
            .collect::<Vec<_>>(),
        srv_err
    );
    for f in &w.frames {
        let dir = if f.src_port == port { "S→C" } else { "C→S" };
        println!(
            "  {dir} types {:?} lens {:?} hs {:?} alerts {:?} certs {}",
            f.content_types,
            f.record_lengths,
            f.handshake_types,
            f.alerts,
            f.certificates.len()
        );
    }
    let fins = trustwatch_testkit::tshark::fields(
        &c.path,
        "tcp.flags.fin==1 || tcp.flags.reset==1",
        &["tcp.srcport", "tcp.flags.fin", "tcp.flags.reset"],
    )
    .unwrap();
    println!(
        "  closes: {:?}",
        fins.iter()
            .map(|r| format!(
                "{}{}",
                if r[0] == port.to_string() { "S" } else { "C" },
                if r[2] == "1" { ":RST" } else { ":FIN" }
            ))
            .collect::<Vec<_>>()
    );
}

fn main() {
    let pki = Pki::new().unwrap();
    let ca = pki.kubeedge_ca().unwrap();
    let other = pki.kubeedge_ca().unwrap();
    let server = pki.server_leaf(&ca).unwrap();
    let edge = pki.client_leaf(&ca, "node-01").unwrap();
    let edge_other = pki.client_leaf(&other, "node-02").unwrap();
    let expired = pki.expired_client_leaf(&ca, "node-03").unwrap();
    let filter: Vec<String> = std::env::args().skip(1).collect();
    for stack in [Stack::Go, Stack::Openssl, Stack::Rustls] {
        if !filter.is_empty()
            && !filter
                .iter()
                .any(|f| format!("{stack:?}").eq_ignore_ascii_case(f))
        {
            continue;
        }
        for v in [TlsVersion::V12, TlsVersion::V13] {
            run("ok", stack, v, &server, &ca, &ca, Some(&edge));
            run(
                "client rejects server (unknown CA)",
                stack,
                v,
                &server,
                &other,
                &other,
                Some(&edge_other),
            );
            run(
                "server rejects client (other CA)",
                stack,
                v,
                &server,
                &ca,
                &ca,
                Some(&edge_other),
            );
            run(
                "server rejects client (expired)",
                stack,
                v,
                &server,
                &ca,
                &ca,
                Some(&expired),
            );
            run(
                "server rejects client (none)",
                stack,
                v,
                &server,
                &ca,
                &ca,
                None,
            );
        }
    }
}
