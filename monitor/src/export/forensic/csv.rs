//! The re-join list as CSV (RFC 4180): every client that failed, with its first and last failure,
//! its counts, and the CA key it last succeeded under — the edges to re-join with the new CA.

use std::fmt::Write as _;

use super::{Collected, when};

/// The header row, the contract of this file.
pub const HEADER: &str = "client,first_failure,last_failure,failures,successes,last_success,last_success_ca_key_id,failing_at_end";

pub fn render(c: &Collected) -> String {
    let mut out = String::from(HEADER);
    out.push_str("\r\n");
    for (ip, cl) in c.failing_clients() {
        let _ = write!(
            out,
            "{ip},{},{},{},{},{},{},{}\r\n",
            cl.first_failure.map(when).unwrap_or_default(),
            cl.last_failure.map(when).unwrap_or_default(),
            cl.failures,
            cl.successes,
            cl.last_success.map(when).unwrap_or_default(),
            cl.last_success_key
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            cl.failing_now,
        );
    }
    out
}
