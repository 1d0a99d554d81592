//! A minimal HTTP/1.1 GET for the monitor's endpoints and a reader of the Prometheus text format
//! (sums of samples selected by name and labels).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::Result;

/// `GET path`; (status, body).
pub fn get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP header end")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .ok_or("no HTTP status")?
        .parse()?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Ok((status, if chunked { dechunk(body) } else { body.into() }))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(len.trim(), 16) else {
            break;
        };
        let (Some(chunk), Some(after)) = (rest.get(..n), rest.get(n..)) else {
            break;
        };
        if n == 0 {
            break;
        }
        out.push_str(chunk);
        s = after.trim_start_matches("\r\n");
    }
    out
}

/// Sum of the samples named `name` whose labels include every `key="value"` of `with`.
pub fn metric(text: &str, name: &str, with: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, labels) = series.split_once('{').unwrap_or((series, ""));
            (n == name
                && with
                    .iter()
                    .all(|(k, v)| labels.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// The values of label `label` among the samples named `name` (with `with`), with their sums.
pub fn by_label(text: &str, name: &str, label: &str, with: &[(&str, &str)]) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = Vec::new();
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = l.rsplit_once(' ') else {
            continue;
        };
        let Some((n, labels)) = series.split_once('{') else {
            continue;
        };
        if n != name
            || !with
                .iter()
                .all(|(k, v)| labels.contains(&format!("{k}=\"{v}\"")))
        {
            continue;
        }
        let key = format!("{label}=\"");
        let Some(v) = labels
            .split_once(&key)
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(v, _)| v.to_string())
        else {
            continue;
        };
        let x: f64 = value.parse().unwrap_or(0.0);
        match out.iter_mut().find(|(k, _)| *k == v) {
            Some((_, s)) => *s += x,
            None => out.push((v, x)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_by_labels() {
        let t = "# HELP x\nhs_total{service=\"cloudhub\",outcome=\"established\"} 3\n\
                 hs_total{service=\"cloudhub\",outcome=\"rejected_by_client\"} 2\n\
                 hs_total{service=\"certsvc\",outcome=\"established\"} 5\nstate{service=\"cloudhub\"} 2\n";
        assert_eq!(metric(t, "hs_total", &[("service", "cloudhub")]), 5.0);
        assert_eq!(metric(t, "hs_total", &[]), 10.0);
        assert_eq!(metric(t, "state", &[("service", "cloudhub")]), 2.0);
        assert_eq!(metric(t, "hs", &[]), 0.0);
        assert_eq!(
            by_label(t, "hs_total", "outcome", &[("service", "cloudhub")]),
            vec![
                ("established".to_string(), 3.0),
                ("rejected_by_client".to_string(), 2.0)
            ]
        );
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }
}
