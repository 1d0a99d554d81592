//! The pipeline: Packet → decode → flow → handshake tracker → Connection.
