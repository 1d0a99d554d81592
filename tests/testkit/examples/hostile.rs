//! Writes one hostile capture: `cargo run -p trustwatch-testkit --example hostile -- CASE OUT.pcap [N]`.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::time::Duration;

use trustwatch_testkit::hostile::{self, Pcap};

fn main() -> trustwatch_testkit::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let case = args.first().ok_or("case")?;
    let out = Path::new(args.get(1).ok_or("out")?);
    let n: Option<u64> = args.get(2).and_then(|s| s.parse().ok());
    let server = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 10000);
    let (start, span) = (Duration::from_secs(1_700_000_000), Duration::from_secs(50));
    let mut p = Pcap::create(out)?;
    match case.as_str() {
        "syn" => hostile::syn_flood(&mut p, server, n.unwrap_or(1_000_000), start, span)?,
        "partial" => {
            hostile::partial_records(&mut p, server, n.unwrap_or(200_000), 2000, start, span)?
        }
        "giant" => hostile::giant_messages(&mut p, server, n.unwrap_or(300), 1 << 20, start, span)?,
        "ooo" => {
            hostile::one_byte_out_of_order(&mut p, server, n.unwrap_or(50), 32_768, start, span)?
        }
        "certs" => {
            let pki = trustwatch_testkit::pki::Pki::new()?;
            let ca = pki.root_ca("Padded", Some(7), 56_000)?;
            let der = ca.cert.der.clone();
            let vary = der.len() / 2;
            hostile::distinct_certificates(
                &mut p,
                server,
                n.unwrap_or(10_000),
                &der,
                vary,
                start,
                span,
            )?
        }
        "hellos" => hostile::hello_resets(&mut p, server, n.unwrap_or(270_000), 5, start, span)?,
        "hellos-many" => {
            hostile::hello_resets(&mut p, server, n.unwrap_or(270_000), 66_000, start, span)?
        }
        "failing" => {
            let pki = trustwatch_testkit::pki::Pki::new()?;
            let ca = pki.kubeedge_ca()?;
            let leaf = pki.server_leaf(&ca)?;
            let chain = leaf.chain_der();
            let refs: Vec<&[u8]> = chain.iter().map(|c| c.as_slice()).collect();
            hostile::failing_clients(&mut p, server, n.unwrap_or(100_000), &refs, start, span)?
        }
        "alerts" => hostile::alert_storm(&mut p, server, n.unwrap_or(10_000), 1000, start, span)?,
        other => return Err(format!("unknown case {other}").into()),
    }
    eprintln!("{} frames", p.frames);
    p.finish()
}
