//! [`KeyId`]: how trustwatch names a CA — by its key, never by name or serial (every CA KubeEdge
//! generates is `CN=KubeEdge`, serial 1024).
//!
//! One type, one derivation per source, one written form: lower-case hex of the key identifier
//! (a Subject or Authority Key Identifier extension, or — RFC 5280 method 1 — the SHA-1 of the
//! subject public key), everywhere in full (JSON, `/api/state`, metrics); [`KeyId::short`] is the
//! one documented abbreviation for people (the summary, the status page, event sentences).

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use sha1::{Digest as _, Sha1};

/// Characters of the abbreviated form.
pub const SHORT_LEN: usize = 16;

/// A CA key identifier: lower-case hex, never empty. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(Arc<str>);

impl KeyId {
    /// The bytes of a key identifier extension (SKI, or the keyIdentifier of an AKI).
    pub fn from_identifier(bytes: &[u8]) -> Option<KeyId> {
        (!bytes.is_empty()).then(|| KeyId(hex::encode(bytes).into()))
    }

    /// RFC 5280 method 1: SHA-1 of the subject public key (the BIT STRING's bytes).
    pub fn of_public_key(subject_public_key: &[u8]) -> KeyId {
        KeyId(hex::encode(Sha1::digest(subject_public_key)).into())
    }

    /// A key id written by a person or another tool: hex, any case, `:` separators allowed.
    pub fn parse(s: &str) -> Option<KeyId> {
        let s = s.trim();
        if !s.is_empty() && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Some(KeyId(s.into()));
        }
        let hex: String = s
            .chars()
            .filter(|c| *c != ':')
            .flat_map(char::to_lowercase)
            .collect();
        (!hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| KeyId(hex.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The abbreviation shown to people: the first [`SHORT_LEN`] hex characters.
    pub fn short(&self) -> &str {
        self.0.get(..SHORT_LEN).unwrap_or(&self.0)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}

impl std::ops::Deref for KeyId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for KeyId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for KeyId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for KeyId {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for KeyId {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for KeyId {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<KeyId> for String {
    fn eq(&self, other: &KeyId) -> bool {
        **self == *other.0
    }
}

impl Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_written_form_whatever_the_input() {
        let a = KeyId::parse("AB:CD:0f").unwrap();
        assert_eq!(a.as_str(), "abcd0f");
        assert_eq!(KeyId::parse(" abcd0f "), Some(a.clone()));
        assert_eq!(KeyId::from_identifier(&[0xab, 0xcd, 0x0f]), Some(a));
        assert_eq!(KeyId::parse(""), None);
        assert_eq!(KeyId::parse("xyz"), None);
        assert_eq!(KeyId::from_identifier(&[]), None);
    }

    #[test]
    fn public_key_method_1_and_the_short_form() {
        // SHA-1 of "abc" (FIPS 180 test vector).
        let k = KeyId::of_public_key(b"abc");
        assert_eq!(k.as_str(), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(k.short(), "a9993e364706816a");
        assert_eq!(KeyId::parse("abcd").unwrap().short(), "abcd");
        assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{k}\""));
    }
}
