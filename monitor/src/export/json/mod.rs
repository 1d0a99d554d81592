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
    /// `,"observer":{"hostname":…}`, added to every record and event (live: the node).
    observer: Option<Vec<u8>>,
}

impl<W: Write> JsonLines<W> {
    /// Records and events; `flush_events` flushes after each event (live).
    pub fn new(out: W, flush_events: bool) -> Self {
        JsonLines {
            out,
            connections: Some(ConnectionWriter::default()),
            flush_events,
            observer: None,
        }
    }

    /// Events only (`live --events`).
    pub fn events_only(out: W) -> Self {
        JsonLines {
            out,
            connections: None,
            flush_events: true,
            observer: None,
        }
    }

    /// Every record and event names the host that observed it (ECS `observer.hostname`).
    pub fn with_observer_hostname(mut self, hostname: &str) -> Self {
        let mut field = b",\"observer\":{\"hostname\":".to_vec();
        // A string always serializes.
        field.extend(serde_json::to_vec(hostname).unwrap_or_else(|_| b"null".to_vec()));
        field.push(b'}');
        self.observer = Some(field);
        self
    }

    pub fn connection(&mut self, c: &Connection) -> io::Result<()> {
        match &mut self.connections {
            Some(w) => w.write(&mut self.out, c, self.observer.as_deref()),
            None => Ok(()),
        }
    }

    pub fn event(&mut self, e: &Event) -> io::Result<()> {
        let mut line = serde_json::to_vec(e).map_err(io::Error::other)?;
        add_observer(&mut line, self.observer.as_deref());
        line.push(b'\n');
        self.out.write_all(&line)?;
        if self.flush_events {
            self.out.flush()?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Adds the observer field before the closing brace of one serialized object.
pub(crate) fn add_observer(object: &mut Vec<u8>, observer: Option<&[u8]>) {
    if let Some(field) = observer
        && object.last() == Some(&b'}')
    {
        object.pop();
        object.extend_from_slice(field);
        object.push(b'}');
    }
}

#[cfg(test)]
mod observer_tests {
    use super::*;

    #[test]
    fn observer_hostname_is_added_to_events_and_escaped() {
        let e = crate::detect::Event {
            at: crate::base::Timestamp::from_micros(1_700_000_000_000_000),
            service: std::sync::Arc::from("cloudhub"),
            detail: crate::detect::event::EventDetail::TrustRecovered(
                crate::detect::event::Recovered {
                    collapsed_at: crate::base::Timestamp::from_micros(1_699_999_990_000_000),
                    ca_key_id: None,
                    previous_ca_key_id: None,
                    succeeding_clients: 3,
                    failing_clients: 0,
                },
            ),
        };
        let mut plain = JsonLines::new(Vec::new(), false);
        plain.event(&e).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&plain.out).unwrap();
        assert!(v.get("observer").is_none(), "{v}");
        let mut named = JsonLines::new(Vec::new(), false).with_observer_hostname("node-\"a\"");
        named.event(&e).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&named.out).unwrap();
        assert_eq!(v["observer"]["hostname"], "node-\"a\"", "{v}");
        assert_eq!(v["trustwatch"]["event"], "trust_recovered", "{v}");
        assert_eq!(v["ecs"]["version"], ECS_VERSION, "{v}");
    }
}
