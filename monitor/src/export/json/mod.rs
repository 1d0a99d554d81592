//! JSON Lines: one object per connection record and per detector event, in the order they happen.
//!
//! Consumes [`Connection`]s and [`Event`]s; produces lines on any writer. `analyze --json` writes
//! them to stdout (buffered); `live --json`/`--events` to a file or stdout, flushed after every
//! event so a reader sees an alert at once.

pub mod community_id;
mod connection;
mod event;

/// The Elastic Common Schema version the records follow (`ecs.version`).
pub const ECS_VERSION: &str = "8.11.0";

use std::io::{self, Write};

pub use connection::ConnectionWriter;

use crate::detect::Event;
use crate::handshake::Connection;

/// A JSON Lines stream of connection records and events.
pub struct JsonLines<W: Write> {
    out: W,
    connections: Option<ConnectionWriter>,
    flush_events: bool,
}

impl<W: Write> JsonLines<W> {
    /// Records and events; `flush_events` flushes after each event (live).
    pub fn new(out: W, flush_events: bool) -> Self {
        JsonLines {
            out,
            connections: Some(ConnectionWriter::default()),
            flush_events,
        }
    }

    /// Events only (`live --events`).
    pub fn events_only(out: W) -> Self {
        JsonLines {
            out,
            connections: None,
            flush_events: true,
        }
    }

    pub fn connection(&mut self, c: &Connection) -> io::Result<()> {
        match &mut self.connections {
            Some(w) => w.write(&mut self.out, c),
            None => Ok(()),
        }
    }

    pub fn event(&mut self, e: &Event) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, e)?;
        self.out.write_all(b"\n")?;
        if self.flush_events {
            self.out.flush()?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
