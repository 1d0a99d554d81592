//! Base types every stage shares: packet time, the two sides of a connection, CA key ids.
//!
//! Nothing here depends on another module of the crate.

mod side;
mod time;

pub use side::{PerSide, Side};
pub use time::Timestamp;
