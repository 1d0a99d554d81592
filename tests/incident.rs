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
/// Over TLS 1.2 a rustls edge rejects a server CA with its own name but another key (exactly
/// KubeEdge's competing CAs) with decrypt_error(51): webpki finds the same-named anchor and its
/// signature check fails. The detector counts it as a trust rejection (`is_trust_rejection`).
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

// ---- two replicas with different CAs at once ----

#[test]
fn divergence_go_tls13() {
    scenarios::divergence(V13, 61);
}
#[test]
fn divergence_go_tls12() {
    scenarios::divergence(V12, 62);
}

// ---- benign rotation, one bad client, expired certificates, missing client certificate ----

#[test]
fn benign_rotation_go_tls13() {
    scenarios::benign_rotation(V13, 71);
}
#[test]
fn benign_rotation_go_tls12() {
    scenarios::benign_rotation(V12, 72);
}
#[test]
fn one_bad_client_go_tls13() {
    scenarios::one_bad_client(V13, 73);
}
#[test]
fn one_bad_client_go_tls12() {
    scenarios::one_bad_client(V12, 74);
}
#[test]
fn expired_client_certs_go_tls13() {
    scenarios::expired(V13, 75);
}
#[test]
fn expired_client_certs_go_tls12() {
    scenarios::expired(V12, 76);
}
#[test]
fn no_client_cert_go_tls13() {
    scenarios::no_client_cert(Go, 77);
}
#[test]
fn no_client_cert_openssl_tls13() {
    scenarios::no_client_cert(Openssl, 78);
}
#[test]
fn no_client_cert_rustls_tls13() {
    scenarios::no_client_cert(Rustls, 79);
}

// ---- trusted-CA references on the TLS 1.2 incident ----

#[test]
fn references_trusted_ca_secret_dir_hash_join_token_go_tls12() {
    scenarios::references(81);
}

/// clap echoes a rejected value by default; the `--join-token` parser must not (its JWT).
#[test]
fn bad_join_token_is_not_echoed() {
    scenarios::bad_join_token_not_echoed();
}
