//! One X.509 certificate, DER → [`CertInfo`] (x509-parser), or [`Presented::Malformed`].
//!
//! Names are printed in DER order as `C=.., O=.., CN=..` (as x509-parser and Suricata do), with
//! control characters (NUL included) escaped RFC 4514 style as `\XX`; non-string values as hex.

use std::fmt::Write;
use std::net::IpAddr;
use std::sync::Arc;

use ::time::format_description::well_known::Rfc3339;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use x509_parser::prelude::*;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::{CertInfo, Presented};
use crate::base::KeyId;

/// Parses one DER certificate. Never panics; unparseable DER gives `Presented::Malformed`.
pub fn parse(der: &[u8]) -> Presented {
    let sha256 = hex::encode(Sha256::digest(der));
    let sha1 = hex::encode(Sha1::digest(der));
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Presented::Malformed { sha256, sha1 };
    };
    let mut info = CertInfo {
        sha256,
        sha1,
        subject: name(cert.subject()),
        issuer: name(cert.issuer()),
        subject_cn: cert
            .subject()
            .iter_common_name()
            .next()
            .map(|a| value(a.attr_value())),
        serial: serial_hex(cert.raw_serial()),
        not_before: rfc3339(&cert.validity().not_before),
        not_after: rfc3339(&cert.validity().not_after),
        not_before_unix: cert.validity().not_before.timestamp(),
        not_after_unix: cert.validity().not_after.timestamp(),
        ski: None,
        aki: None,
        spki_sha256: hex::encode(Sha256::digest(cert.public_key().raw)),
        key_sha1: KeyId::of_public_key(&cert.public_key().subject_public_key.data),
        is_ca: false,
        key_type: String::new(),
        key_bits: None,
        sans: Vec::new(),
        self_signed: false,
        der: der.into(),
        rendered: Default::default(),
    };
    let (key_type, key_bits) = key(cert.public_key());
    info.key_type = key_type;
    info.key_bits = key_bits;
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => info.ski = KeyId::from_identifier(k.0),
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                info.aki = a
                    .key_identifier
                    .as_ref()
                    .and_then(|k| KeyId::from_identifier(k.0))
            }
            ParsedExtension::BasicConstraints(bc) => info.is_ca = bc.ca,
            ParsedExtension::SubjectAlternativeName(san) => {
                for gn in &san.general_names {
                    match gn {
                        GeneralName::DNSName(d) => info.sans.push(escape(d)),
                        GeneralName::IPAddress(b) => {
                            if let Some(ip) = ip(b) {
                                info.sans.push(ip.to_string());
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    info.self_signed = cert.subject().as_raw() == cert.issuer().as_raw()
        && match (&info.ski, &info.aki) {
            (Some(s), Some(a)) => s == a,
            _ => true,
        };
    Presented::Parsed(Arc::new(info))
}

fn ip(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
        _ => None,
    }
}

/// Serial as lower-case hex without leading zeros ("0" for zero).
fn serial_hex(raw: &[u8]) -> String {
    let s = hex::encode(raw);
    let t = s.trim_start_matches('0');
    if t.is_empty() { "0".into() } else { t.into() }
}

fn rfc3339(t: &ASN1Time) -> String {
    t.to_datetime()
        .format(&Rfc3339)
        .unwrap_or_else(|_| t.timestamp().to_string())
}

/// Escapes control characters as `\XX` (RFC 4514 hex pair).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() && (c as u32) < 0x100 {
            let _ = write!(out, "\\{:02X}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

/// An attribute value as text: string types decoded (UTF-8, lossy; BMPString as UTF-16), others
/// as upper-case hex of their content.
fn value(v: &x509_parser::asn1_rs::Any<'_>) -> String {
    use x509_parser::asn1_rs::Tag;
    match v.tag() {
        Tag::BmpString => {
            let units = v
                .data
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]));
            escape(
                &char::decode_utf16(units)
                    .map(|c| c.unwrap_or('\u{fffd}'))
                    .collect::<String>(),
            )
        }
        Tag::UniversalString => {
            let chars = v.data.chunks_exact(4).map(|c| {
                char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])).unwrap_or('\u{fffd}')
            });
            escape(&chars.collect::<String>())
        }
        Tag::NumericString
        | Tag::VisibleString
        | Tag::PrintableString
        | Tag::GeneralString
        | Tag::GraphicString
        | Tag::T61String
        | Tag::VideotexString
        | Tag::Utf8String
        | Tag::Ia5String => escape(&String::from_utf8_lossy(v.data)),
        _ => hex::encode_upper(v.data),
    }
}

/// `C=US, O=Example, CN=name` in DER order; multi-valued RDNs joined by ` + `.
fn name(n: &X509Name<'_>) -> String {
    let registry = oid_registry();
    let mut out = String::new();
    for (i, rdn) in n.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push_str(" + ");
            }
            match oid2abbrev(attr.attr_type(), registry) {
                Ok(abbrev) => out.push_str(abbrev),
                Err(_) => out.push_str(&attr.attr_type().to_id_string()),
            }
            out.push('=');
            out.push_str(&value(attr.attr_value()));
        }
    }
    out
}

/// Key type and size in bits (RSA modulus; EC curve size; Ed25519/Ed448 fixed).
fn key(spki: &SubjectPublicKeyInfo<'_>) -> (String, Option<u32>) {
    let alg = spki.algorithm.algorithm.to_id_string();
    let (kind, bits) = match alg.as_str() {
        "1.2.840.113549.1.1.1" | "1.2.840.113549.1.1.10" => {
            let kind = if alg.ends_with(".10") {
                "RSA-PSS"
            } else {
                "RSA"
            };
            let bits = match spki.parsed() {
                Ok(PublicKey::RSA(rsa)) => modulus_bits(rsa.modulus),
                _ => None,
            };
            (kind, bits)
        }
        "1.2.840.10045.2.1" => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok());
            let bits = match curve.map(|c| c.to_id_string()).as_deref() {
                Some("1.2.840.10045.3.1.7" | "1.3.132.0.10" | "1.3.36.3.3.2.8.1.1.7") => Some(256),
                Some("1.3.132.0.34" | "1.3.36.3.3.2.8.1.1.11") => Some(384),
                Some("1.3.132.0.35") => Some(521),
                Some("1.3.132.0.33") => Some(224),
                Some("1.2.840.10045.3.1.1") => Some(192),
                Some("1.3.36.3.3.2.8.1.1.13") => Some(512),
                _ => match spki.parsed() {
                    Ok(k @ PublicKey::EC(_)) => u32::try_from(k.key_size()).ok().filter(|&b| b > 0),
                    _ => None,
                },
            };
            ("EC", bits)
        }
        "1.3.101.112" => ("Ed25519", Some(256)),
        "1.3.101.113" => ("Ed448", Some(456)),
        "1.3.101.110" => ("X25519", Some(256)),
        "1.3.101.111" => ("X448", Some(448)),
        "1.2.840.10040.4.1" => {
            let bits = match spki.parsed() {
                Ok(PublicKey::DSA(y)) => modulus_bits(y),
                _ => None,
            };
            ("DSA", bits)
        }
        _ => return (alg.clone(), None),
    };
    (kind.to_string(), bits)
}

/// Bit length of a big-endian unsigned integer (leading zero bytes ignored).
fn modulus_bits(m: &[u8]) -> Option<u32> {
    let start = m.iter().position(|&b| b != 0)?;
    let len = u32::try_from(m.len() - start).ok()?;
    Some((len - 1) * 8 + (8 - m[start].leading_zeros()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_and_bits_helpers() {
        assert_eq!(serial_hex(&[0x00, 0x97, 0xe6]), "97e6");
        assert_eq!(serial_hex(&[0x04, 0x00]), "400");
        assert_eq!(serial_hex(&[0]), "0");
        assert_eq!(serial_hex(&[]), "0");
        assert_eq!(modulus_bits(&[0x00, 0x80, 0, 0]), Some(24));
        assert_eq!(modulus_bits(&[0x01, 0]), Some(9));
        assert_eq!(modulus_bits(&[0, 0]), None);
        assert_eq!(escape("a\0b\x7f"), "a\\00b\\7F");
    }

    #[test]
    fn garbage_is_malformed_with_hashes() {
        for der in [&b""[..], b"\x30\x03\x02\x01", b"not a certificate at all"] {
            match parse(der) {
                Presented::Malformed { sha256, sha1 } => {
                    assert_eq!(sha256, hex::encode(Sha256::digest(der)));
                    assert_eq!(sha1, hex::encode(Sha1::digest(der)));
                }
                Presented::Parsed(_) => panic!("parsed garbage"),
            }
        }
    }
}
