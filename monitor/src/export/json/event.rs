//! Detector events as JSON lines: alert records (`event.kind: "alert"`) that share the stream with
//! the connection records.

use serde::Serialize;
use serde::ser::SerializeMap as _;
use serde_json::{Map, Value, json};

use crate::detect::{Event, exit_worthy};
use crate::export::text::{evidence, timeline_line};

impl Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut tw = Map::new();
        tw.insert("event".into(), json!(self.name()));
        tw.insert("service".into(), json!(&*self.service));
        tw.insert("detection_time".into(), json!(self.at.rfc3339()));
        let fields = serde_json::to_value(&self.detail).unwrap_or(Value::Null);
        if let Value::Object(o) = fields {
            tw.extend(o);
        }
        let evidence = evidence(self);
        tw.insert("evidence".into(), json!(evidence));
        tw.insert("evidence_code".into(), json!(evidence_code(self)));
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("@timestamp", &self.at.rfc3339())?;
        m.serialize_entry("ecs", &json!({ "version": super::ECS_VERSION }))?;
        m.serialize_entry(
            "event",
            &json!({
                "kind": "alert",
                "category": ["network"],
                "type": ["info"],
                "action": self.name(),
                "severity": if exit_worthy(self) { 3 } else { 1 },
                "reason": evidence,
            }),
        )?;
        m.serialize_entry("message", &timeline_line(self))?;
        if let Some(server) = self.server() {
            m.serialize_entry("server", &json!({"address": server.ip().to_string(), "ip": server.ip().to_string(), "port": server.port()}))?;
        }
        m.serialize_entry("trustwatch", &tw)?;
        m.end()
    }
}

/// The event's evidence, machine-readable: its name qualified by what decided it
/// (`trust_collapse_partial`, `ca_divergence_presented_keys`, `ca_changed_probe`).
pub fn evidence_code(e: &Event) -> String {
    use crate::detect::EventDetail;
    let qualifier = match &e.detail {
        EventDetail::TrustCollapse(c) => Some(c.scope.as_str().to_string()),
        EventDetail::CaDivergence(d) => serde_json::to_value(d.basis)
            .ok()
            .and_then(|v| v.as_str().map(String::from)),
        EventDetail::CaChanged(c) => Some(c.source.as_str().to_string()),
        _ => None,
    };
    match qualifier {
        Some(q) => format!("{}_{q}", e.name()),
        None => e.name().to_string(),
    }
}
