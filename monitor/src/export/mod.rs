//! Export: connection records and events as JSON Lines (ECS field names) and the human report.

pub mod json;
pub mod metrics;
pub mod report;
pub mod text;
