//! Numbers for people: durations (`1 m 43 s`), sizes (`3.2 MiB`), counted nouns (`1 connection`,
//! `2 connections`).

/// A duration of `us` microseconds, to the most useful precision: `850 ms`, `12.4 s`, `1 m 43 s`,
/// `2 h 5 m`, `3 d 4 h`. Negative durations get a minus sign.
pub fn duration_us(us: i64) -> String {
    if us < 0 {
        return format!("-{}", duration_us(us.saturating_neg()));
    }
    let ms = us / 1_000;
    let s = us / 1_000_000;
    if us < 1_000 {
        format!("{us} µs")
    } else if ms < 1_000 {
        format!("{ms} ms")
    } else if s < 60 {
        format!("{:.1} s", us as f64 / 1e6)
    } else if s < 3_600 {
        format!("{} m {} s", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{} h {} m", s / 3_600, (s % 3_600) / 60)
    } else {
        format!("{} d {} h", s / 86_400, (s % 86_400) / 3_600)
    }
}

/// A size in bytes with binary units: `512 B`, `1.5 KiB`, `3.2 MiB`, `1.1 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `n` and the noun, singular for exactly one: `plural(1, "connection", "connections")`.
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration_us(999), "999 µs");
        assert_eq!(duration_us(850_000), "850 ms");
        assert_eq!(duration_us(12_400_000), "12.4 s");
        assert_eq!(duration_us(103_000_000), "1 m 43 s");
        assert_eq!(duration_us(7_500_000_000), "2 h 5 m");
        assert_eq!(duration_us(-2_000_000), "-2.0 s");
    }

    #[test]
    fn sizes_and_counts() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 + 200 * 1024), "3.2 MiB");
        assert_eq!(
            count(1, "TLS connection", "TLS connections"),
            "1 TLS connection"
        );
        assert_eq!(count(0, "file", "files"), "0 files");
    }
}
