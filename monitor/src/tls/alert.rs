//! TLS alert descriptions (RFC 8446 §6, RFC 5246 §7.2) and which of them concern certificates.

