//! The KubeEdge trust-collapse incident (issue 3) end to end, run as root: real TLS peers (Go's
//! crypto/tls like CloudCore and EdgeCore, the OpenSSL CLI, rustls) act each scenario out over
//! loopback from several 127.0.0.0/8 edge addresses, libpcap captures it on `lo`, and the real
//! `trustwatch analyze --json` binary reads the capture. Every scenario asserts the exit code, the
//! trust timeline and the detector events — what must fire and what must stay quiet — against the
//! ground truth of the peers (which handshakes their stacks accepted) and of the PKI (the CA key
//! ids of the generated CAs). Detection latency is measured in capture time and printed
//! (`LATENCY ...` lines with `--nocapture`), what each stack sent on the wire as `WIRE ...` lines.
//!
//! Each test owns its port and its /24 of edge addresses, so the tests run in parallel.

#[path = "incident/harness.rs"]
mod harness;
#[path = "incident/library.rs"]
mod library;
#[path = "incident/scenarios.rs"]
mod scenarios;

use trustwatch_testkit::peers::Stack::{Go, Openssl, Rustls};
use trustwatch_testkit::peers::TlsVersion::{V12, V13};

// ---- healthy: exit 0, no events ----

#[test]
fn healthy_go_tls13() {
    scenarios::healthy(Go, V13, 31);
}
#[test]
fn healthy_go_tls12() {
    scenarios::healthy(Go, V12, 32);
}
#[test]
fn healthy_openssl_tls13() {
    scenarios::healthy(Openssl, V13, 33);
}
#[test]
fn healthy_rustls_tls13() {
    scenarios::healthy(Rustls, V13, 34);
}

// ---- the incident: CloudCore switches CA_A -> CA_B, edges trust CA_A only ----

#[test]
fn incident_go_tls13() {
    scenarios::incident(Go, Go, V13, 41);
}
#[test]
fn incident_go_tls12() {
    scenarios::incident(Go, Go, V12, 42);
}
#[test]
fn incident_openssl_restart_tls13() {
    scenarios::incident(Openssl, Openssl, V13, 43);
}
#[test]
fn incident_openssl_restart_tls12() {
    scenarios::incident(Openssl, Openssl, V12, 44);
}
#[test]
fn incident_rustls_restart_tls13() {
    scenarios::incident(Rustls, Rustls, V13, 45);
}
#[test]
fn incident_rustls_restart_tls12() {
    scenarios::incident(Rustls, Rustls, V12, 46);
}

// ---- the server rejects the edges' certificates (client CA mismatch) ----

#[test]
fn server_rejects_go_tls13() {
    scenarios::server_rejects(Go, Go, V13, 51);
}
#[test]
fn server_rejects_go_tls12() {
    scenarios::server_rejects(Go, Go, V12, 52);
}
#[test]
fn server_rejects_openssl_tls13() {
    scenarios::server_rejects(Openssl, Openssl, V13, 53);
}
#[test]
fn server_rejects_rustls_tls13() {
    scenarios::server_rejects(Rustls, Rustls, V13, 54);
}
