//! Record framing and handshake-message reassembly for one direction.

/// Frames records and reassembles handshake messages for one direction.
#[derive(Debug, Default)]
pub struct RecordStream {}
