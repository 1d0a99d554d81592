//! Kernel time to wall time.
//!
//! Consumes the program's `bpf_ktime_get_ns()` stamps (CLOCK_MONOTONIC); produces
//! [`Timestamp`]s (microseconds since the Unix epoch, as libpcap gives). The offset between the
//! two clocks is measured when the source opens and again every second, so a stepped or slewed
//! wall clock is followed as libpcap's stamps follow it.

use crate::base::Timestamp;

fn now_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to write; both clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &raw mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// CLOCK_MONOTONIC → wall time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Wall time minus monotonic time, nanoseconds.
    offset_ns: i128,
}

impl Clock {
    pub fn new() -> Clock {
        let mut c = Clock { offset_ns: 0 };
        c.resync();
        c
    }

    /// A clock whose wall time is monotonic time plus `offset_ns`, never resynchronised (for
    /// replaying records deterministically, as the fuzz harness does).
    pub const fn with_offset_ns(offset_ns: i128) -> Clock {
        Clock { offset_ns }
    }

    /// Measures the offset again: the wall-clock reading is bracketed by two monotonic ones
    /// and compared with their midpoint.
    pub fn resync(&mut self) {
        let before = now_ns(libc::CLOCK_MONOTONIC);
        let wall = now_ns(libc::CLOCK_REALTIME);
        let after = now_ns(libc::CLOCK_MONOTONIC);
        self.offset_ns = wall - (before + (after - before) / 2);
    }

    /// The wall time of a monotonic stamp.
    pub fn wall(&self, mono_ns: u64) -> Timestamp {
        let us = (i128::from(mono_ns) + self.offset_ns).div_euclid(1_000);
        Timestamp::from_micros(i64::try_from(us).unwrap_or(i64::MAX))
    }

    /// The current monotonic time (what `bpf_ktime_get_ns()` would return now).
    pub fn monotonic_now_ns() -> u64 {
        u64::try_from(now_ns(libc::CLOCK_MONOTONIC)).unwrap_or(0)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_now_maps_to_wall_now() {
        let c = Clock::new();
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64;
        let ts = c.wall(Clock::monotonic_now_ns());
        assert!((ts.0 - wall).abs() < 5_000, "{} vs {wall}", ts.0);
    }
}
