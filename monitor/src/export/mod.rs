//! Export: connection records and events as JSON Lines (ECS field names), the human report, and
//! the incident report to share (HTML, Markdown, CSV).

pub mod forensic;
pub mod json;
pub mod metrics;
pub mod report;
pub mod text;
