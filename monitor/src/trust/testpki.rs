//! Test PKI for the detect/trust unit tests: KubeEdge-like CAs (same subject CN=KubeEdge, same
//! serial 1024, different keys) and leaves they sign, generated with rcgen.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

use super::CaIdentity;

/// A CA that can sign leaves.
pub struct TestCa {
    pub issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate and its PKCS#8 key.
pub struct TestLeaf {
    pub der: Vec<u8>,
    pub key_pkcs8: Vec<u8>,
}

impl TestCa {
    /// CN=KubeEdge, serial 1024, a fresh key: two of them differ only by the key.
    pub fn kubeedge() -> TestCa {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name.push(DnType::CommonName, "KubeEdge");
        p.serial_number = Some(1024u64.into());
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("key");
        TestCa {
            issuer: CertifiedIssuer::self_signed(p, key).expect("ca"),
        }
    }

    pub fn der(&self) -> Vec<u8> {
        self.issuer.der().to_vec()
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    pub fn identity(&self) -> CaIdentity {
        CaIdentity::from_der(&self.der()).expect("parse ca")
    }

    /// The key id a leaf it signs names (AKI = this CA's SKI).
    pub fn key_id(&self) -> crate::base::KeyId {
        self.identity().key_id
    }

    /// A server/client leaf for `names` (DNS names or IP addresses).
    pub fn leaf(&self, names: &[&str]) -> TestLeaf {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        p.subject_alt_names = names
            .iter()
            .map(|n| match n.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*n).try_into().expect("dns name")),
            })
            .collect();
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("key");
        let cert = p.signed_by(&key, &self.issuer).expect("leaf");
        TestLeaf {
            der: cert.der().to_vec(),
            key_pkcs8: key.serialize_der(),
        }
    }
}
