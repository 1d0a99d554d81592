//! The per-connection state machine that turns TLS events of both directions into a [`Connection`].

/// Follows one connection's handshake.
pub struct Tracker {}
