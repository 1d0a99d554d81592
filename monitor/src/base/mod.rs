//! Base types every stage shares: packet time, the two sides of a connection, CA key ids.
//!
//! Nothing here depends on another module of the crate.

mod counters;
pub mod human;
mod key_id;
mod prefetch;
mod side;
mod time;

pub use counters::{Counter, CounterKind};
pub use key_id::KeyId;
pub use prefetch::{prefetch, prefetch_far};
pub use side::{PerSide, Side};
pub use time::Timestamp;
