//! Packet time: microseconds since the Unix epoch, the clock every window runs on.

use std::cell::Cell;

/// Capture timestamp, microseconds since the Unix epoch (packet time drives every window).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub const fn from_micros(us: i64) -> Self {
        Timestamp(us)
    }
    /// The wall clock (live mode: capture timestamps are wall-clock times too).
    pub fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
    }
    pub const fn micros(self) -> i64 {
        self.0
    }
    pub fn secs_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }
    /// Microseconds from `earlier` to `self` (negative when `earlier` is later).
    pub const fn since(self, earlier: Timestamp) -> i64 {
        self.0 - earlier.0
    }

    /// RFC 3339 UTC with microseconds, e.g. `2026-11-26T17:49:30.123456Z` (also its `Display`).
    pub fn rfc3339(self) -> String {
        self.to_string()
    }
}

/// Length of [`Timestamp::rfc3339_bytes`]: `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub const RFC3339_LEN: usize = 27;

/// Microseconds from 0000-03-01 to 1970-01-01 would not fit the formatter's arithmetic far beyond
/// these bounds; the fast path covers years 1000 to 9999 (what captures hold).
const FAST_MIN_US: i64 = -30_610_224_000_000_000; // 1000-01-01T00:00:00Z
const FAST_END_US: i64 = 253_402_300_800_000_000; // 10000-01-01T00:00:00Z

impl Timestamp {
    /// RFC 3339 UTC with microseconds as ASCII, without allocating or going through `fmt`
    /// (the JSON writer prints four per connection). `None` outside years 1000–9999, where
    /// [`Display`](std::fmt::Display) takes over with the same format.
    pub fn rfc3339_bytes(self) -> Option<[u8; RFC3339_LEN]> {
        if !(FAST_MIN_US..FAST_END_US).contains(&self.0) {
            return None;
        }
        let secs = self.0.div_euclid(1_000_000);
        let mut b = [0; RFC3339_LEN];
        b[..SECOND_LEN].copy_from_slice(&LAST_SECOND.with(|last| {
            let (known, text) = last.get();
            if known == secs {
                return text;
            }
            let text = second_text(secs);
            last.set((secs, text));
            text
        }));
        let mut micros = self.0.rem_euclid(1_000_000) as u32;
        b[SECOND_LEN] = b'.';
        for digit in b[SECOND_LEN + 1..RFC3339_LEN - 1].iter_mut().rev() {
            *digit = b'0' + (micros % 10) as u8;
            micros /= 10;
        }
        b[RFC3339_LEN - 1] = b'Z';
        Some(b)
    }
}

/// Length of `YYYY-MM-DDTHH:MM:SS`.
const SECOND_LEN: usize = 19;

thread_local! {
    /// The second last formatted on this thread, and its text: records come in time order, and
    /// most timestamps share their second with the one before.
    static LAST_SECOND: Cell<(i64, [u8; SECOND_LEN])> =
        const { Cell::new((i64::MIN, [0; SECOND_LEN])) };
}

/// `YYYY-MM-DDTHH:MM:SS` of `secs` since the epoch (in the fast range).
fn second_text(secs: i64) -> [u8; SECOND_LEN] {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let (year, month, day) = civil_from_days(days);
    let mut b = *b"0000-00-00T00:00:00";
    let mut put = |at: usize, width: usize, mut v: u32| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year as u32);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, sod / 3600);
    put(14, 2, sod / 60 % 60);
    put(17, 2, sod % 60);
    b
}

/// Year, month (1–12) and day (1–31) of a day count since 1970-01-01 in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    (if m <= 2 { y + 1 } else { y }, m, d)
}

impl std::fmt::Display for Timestamp {
    /// RFC 3339 UTC with microseconds; the raw microseconds when out of range.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(b) = self.rfc3339_bytes() {
            // ASCII by construction.
            return f.write_str(std::str::from_utf8(&b).unwrap_or_default());
        }
        let nanos = i128::from(self.0) * 1000;
        let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(nanos) else {
            return write!(f, "{}", self.0);
        };
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.microsecond()
        )
    }
}

/// RFC 3339, as everywhere in trustwatch's output.
impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The general formatter (the `time` crate), as the fast one must print.
    fn slow(ts: Timestamp) -> String {
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts.0) * 1000).unwrap();
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.microsecond()
        )
    }

    #[test]
    fn fast_rfc3339_agrees_with_the_calendar() {
        let fixed = [
            (0, "1970-01-01T00:00:00.000000Z"),
            (-1, "1969-12-31T23:59:59.999999Z"),
            (951_782_400_000_001, "2000-02-29T00:00:00.000001Z"),
            (1_764_655_200_123_456, "2025-12-02T06:00:00.123456Z"),
            (FAST_MIN_US, "1000-01-01T00:00:00.000000Z"),
            (FAST_END_US - 1, "9999-12-31T23:59:59.999999Z"),
        ];
        for (us, want) in fixed {
            // In range the fast path answers (else the walk below would compare the calendar
            // with itself).
            let fast = Timestamp(us).rfc3339_bytes().expect("in the fast range");
            assert_eq!(std::str::from_utf8(&fast), Ok(want));
            assert_eq!(Timestamp(us).to_string(), want);
            assert_eq!(slow(Timestamp(us)), want);
        }
        // A walk over the range with a step that is prime to days, months and leap cycles.
        let mut us = FAST_MIN_US;
        let mut n = 0;
        while us < FAST_END_US {
            let ts = Timestamp(us);
            assert_eq!(ts.to_string(), slow(ts), "{us}");
            us += 7_919_333_777_123;
            n += 1;
        }
        assert!(n > 30_000, "{n}");
        // Runs inside one second and across seconds, as records come: the remembered second
        // must be the timestamp's own, on both sides of the epoch and of a leap day.
        for start in [-2_000_000, 951_868_799_000_000, 1_764_655_199_999_990] {
            for step in [1, 7, 499_999, 1_000_000] {
                for k in 0..40 {
                    let ts = Timestamp(start + k * step);
                    assert_eq!(ts.to_string(), slow(ts), "{}", ts.0);
                }
            }
        }
        // Outside the fast range the general path prints the same format.
        assert!(Timestamp(FAST_MIN_US - 1).rfc3339_bytes().is_none());
        assert_eq!(
            Timestamp(FAST_MIN_US - 1).to_string(),
            "0999-12-31T23:59:59.999999Z"
        );
    }
}
