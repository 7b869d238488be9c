//! The soak's readings of the server: RSS and descriptors from `/proc`, and
//! `bistream_history_bytes` from `GET /metrics` (Prometheus text).

use crate::publisher::parse_response;
use serde::Serialize;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Metric of the bytes held in the server's history (docs/protocol.md, metrics).
pub const HISTORY_BYTES: &str = "bistream_history_bytes";
/// How long a scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest metrics page read.
const MAX_PAGE: usize = 4 << 20;

/// One reading of the server during the soak.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Sample {
    /// Seconds since the soak started.
    pub t_s: f64,
    /// The soak's phase when it was taken.
    pub phase: &'static str,
    pub rss_bytes: u64,
    pub fds: u64,
    /// `bistream_history_bytes`; `None` when the server has no such metric.
    pub history_bytes: Option<f64>,
    /// Harness connections open (established or connecting).
    pub open: u64,
    /// Connections churned so far.
    pub churned: u64,
}

/// The value of an unlabelled sample `name` in Prometheus text.
pub fn prom_value(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let rest = l.strip_prefix(name)?;
        // `name value`, not `name_longer value` or `name{label} value`.
        let value = rest.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// `GET /metrics` on a fresh connection (closed after); the body of a 200.
pub fn scrape(addr: SocketAddr, host: &str) -> io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, SCRAPE_TIMEOUT)?;
    s.set_read_timeout(Some(SCRAPE_TIMEOUT))?;
    s.set_write_timeout(Some(SCRAPE_TIMEOUT))?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: bistream-loadtest\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.take(MAX_PAGE as u64).read_to_end(&mut buf)?;
    match parse_response(&buf) {
        Ok(Some((resp, _))) if resp.status == 200 => {
            Ok(String::from_utf8_lossy(&resp.body).into_owned())
        }
        Ok(Some((resp, _))) => Err(io::Error::other(format!(
            "GET /metrics answered {}",
            resp.status
        ))),
        Ok(None) => Err(io::Error::other("GET /metrics: incomplete response")),
        Err(e) => Err(io::Error::other(format!("GET /metrics: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_unlabelled_samples() {
        let text =
            "# HELP bistream_history_bytes Bytes held\n# TYPE bistream_history_bytes gauge\n\
                    bistream_history_bytes_total 9\nbistream_history_bytes 123456\n\
                    bistream_connections{channel=\"dashboard\"} 7\n";
        assert_eq!(prom_value(text, HISTORY_BYTES), Some(123456.0));
        assert_eq!(prom_value(text, "bistream_connections"), None);
        assert_eq!(prom_value("", HISTORY_BYTES), None);
        assert_eq!(
            prom_value("bistream_history_bytes 1.5e3", HISTORY_BYTES),
            Some(1500.0)
        );
    }
}
