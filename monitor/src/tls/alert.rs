//! TLS alert descriptions (RFC 8446 §6, RFC 5246 §7.2) and which of them concern certificates,
//! plus IANA cipher-suite names (from tls-parser's registry).
//!
//! Consumes alert codes and cipher ids; produces their registered names.

/// Registered name of an alert description code; `"unknown"` for an unassigned one.
pub fn name(code: u8) -> &'static str {
    match code {
        0 => "close_notify",
        10 => "unexpected_message",
        20 => "bad_record_mac",
        21 => "decryption_failed",
        22 => "record_overflow",
        30 => "decompression_failure",
        40 => "handshake_failure",
        41 => "no_certificate",
        42 => "bad_certificate",
        43 => "unsupported_certificate",
        44 => "certificate_revoked",
        45 => "certificate_expired",
        46 => "certificate_unknown",
        47 => "illegal_parameter",
        48 => "unknown_ca",
        49 => "access_denied",
        50 => "decode_error",
        51 => "decrypt_error",
        60 => "export_restriction",
        70 => "protocol_version",
        71 => "insufficient_security",
        80 => "internal_error",
        86 => "inappropriate_fallback",
        90 => "user_canceled",
        100 => "no_renegotiation",
        109 => "missing_extension",
        110 => "unsupported_extension",
        111 => "certificate_unobtainable",
        112 => "unrecognized_name",
        113 => "bad_certificate_status_response",
        114 => "bad_certificate_hash_value",
        115 => "unknown_psk_identity",
        116 => "certificate_required",
        120 => "no_application_protocol",
        _ => "unknown",
    }
}

/// Alerts that report a problem with a presented certificate or its chain: bad_certificate(42),
/// unsupported_certificate(43), certificate_revoked(44), certificate_expired(45),
/// certificate_unknown(46), unknown_ca(48), certificate_required(116).
pub fn is_certificate_related(code: u8) -> bool {
    matches!(code, 42..=46 | 48 | 116)
}

/// Alerts that abort a handshake because the peer's certificate chain is not trusted: the
/// certificate alerts, plus decrypt_error(51) — a signature did not verify, which is how rustls
/// (webpki) answers a chain signed by a CA with the expected name but another key: exactly two
/// KubeEdge CAs, both `CN=KubeEdge`, serial 1024.
pub fn is_trust_rejection(code: u8) -> bool {
    is_certificate_related(code) || code == 51
}

/// IANA name of a cipher suite (`TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256`), if registered.
pub fn cipher_name(id: u16) -> Option<&'static str> {
    tls_parser::TlsCipherSuite::from_id(id).map(|c| c.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_alerts() {
        let cert: Vec<u8> = (0..=255u8).filter(|&c| is_certificate_related(c)).collect();
        assert_eq!(cert, [42, 43, 44, 45, 46, 48, 116]);
    }

    /// Every code of the IANA TLS Alerts registry with its registered name; every other code is
    /// "unknown" (the names are what records and metrics say: each one pinned).
    #[test]
    fn every_registered_alert_has_its_iana_name() {
        const IANA: [(u8, &str); 34] = [
            (0, "close_notify"),
            (10, "unexpected_message"),
            (20, "bad_record_mac"),
            (21, "decryption_failed"),
            (22, "record_overflow"),
            (30, "decompression_failure"),
            (40, "handshake_failure"),
            (41, "no_certificate"),
            (42, "bad_certificate"),
            (43, "unsupported_certificate"),
            (44, "certificate_revoked"),
            (45, "certificate_expired"),
            (46, "certificate_unknown"),
            (47, "illegal_parameter"),
            (48, "unknown_ca"),
            (49, "access_denied"),
            (50, "decode_error"),
            (51, "decrypt_error"),
            (60, "export_restriction"),
            (70, "protocol_version"),
            (71, "insufficient_security"),
            (80, "internal_error"),
            (86, "inappropriate_fallback"),
            (90, "user_canceled"),
            (100, "no_renegotiation"),
            (109, "missing_extension"),
            (110, "unsupported_extension"),
            (111, "certificate_unobtainable"),
            (112, "unrecognized_name"),
            (113, "bad_certificate_status_response"),
            (114, "bad_certificate_hash_value"),
            (115, "unknown_psk_identity"),
            (116, "certificate_required"),
            (120, "no_application_protocol"),
        ];
        for code in 0..=u8::MAX {
            let want = IANA
                .iter()
                .find(|(c, _)| *c == code)
                .map_or("unknown", |(_, n)| *n);
            assert_eq!(name(code), want, "alert {code}");
        }
    }

    #[test]
    fn cipher_names() {
        assert_eq!(
            cipher_name(0xc02b),
            Some("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256")
        );
        assert_eq!(cipher_name(0x1301), Some("TLS_AES_128_GCM_SHA256"));
        assert_eq!(
            cipher_name(0xc02f),
            Some("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256")
        );
        assert_eq!(cipher_name(0x0a0a), None);
    }
}
