//! The operator console (`--console`): `GET /console` serves a page embedded in
//! the binary, and `GET /api/stats` the numbers in its header.
//!
//! The page is built from `clients/console` (TypeScript, using the
//! `bistream-client` package in `clients/js`) by `make console`; the built files
//! are committed under `src/console/` so that building the server needs only
//! Rust, and `make console-check` fails when they are stale. Its
//! `Content-Security-Policy` lets it load nothing from anywhere but this server.
//!
//! `/api/stats` turns the Prometheus metrics into rates over the last window:
//! the previous sample (counter values, histogram buckets, when) is kept in a
//! [`StatsWindow`] that every loop shares, and each request that finds it at
//! least [`MIN_WINDOW`] old replaces it, so any number of open consoles see
//! windows of about a second instead of splitting one between them.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::core::Metric as _;
use serde::Serialize;

use crate::auth::{AuthError, Verifier};
use crate::channel::Channel;
use crate::http::head::RequestHead;
use crate::http::response::{self, Refusal};
use crate::http::upgrade::{parse_query, request_token};
use crate::metrics::{Metrics, ECHO_LABEL};

/// What the page may load: only this server's own scripts, styles, images and
/// connections (`connect-src 'self'` covers `ws://` to the same host in current
/// browsers), no inline code, no framing, no form posts elsewhere.
macro_rules! csp {
    () => {
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
         img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    };
}
pub const CSP: &str = csp!();

/// Headers on every console response.
pub const SECURITY_HEADERS: &str = concat!(
    "Content-Security-Policy: ",
    csp!(),
    "\r\n",
    "X-Content-Type-Options: nosniff\r\n",
    "Referrer-Policy: no-referrer\r\n",
    "X-Frame-Options: DENY\r\n",
);

/// Rates are computed over at least this long; requests sooner than that get the last result.
pub const MIN_WINDOW: Duration = Duration::from_millis(900);

const INDEX_HTML: &[u8] = include_bytes!("console/index.html");
const APP_JS: &[u8] = include_bytes!("console/app.js");
const APP_CSS: &[u8] = include_bytes!("console/app.css");
const FAVICON_SVG: &[u8] = include_bytes!("console/favicon.svg");

/// One embedded file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static [u8],
}

/// The embedded file at `path`, `None` for anything else under `/console`.
pub fn asset(path: &str) -> Option<Asset> {
    let (content_type, body) = match path {
        "/console" | "/console/" | "/console/index.html" => {
            ("text/html; charset=utf-8", INDEX_HTML)
        }
        "/console/app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "/console/app.css" => ("text/css; charset=utf-8", APP_CSS),
        "/console/favicon.svg" => ("image/svg+xml", FAVICON_SVG),
        _ => return None,
    };
    Some(Asset { content_type, body })
}

/// The full HTTP response for a console path (404 for an unknown asset).
pub fn page_response(path: &str, keep_alive: bool) -> Vec<u8> {
    match asset(path) {
        Some(a) => response::response(200, a.content_type, SECURITY_HEADERS, a.body, keep_alive),
        None => Refusal::not_found().to_response(keep_alive),
    }
}

/// The full HTTP response for `GET /api/stats`: with auth on, any valid token
/// (subscriber or publisher) as `Authorization: Bearer` or `?token=`; 401 otherwise.
pub fn stats_response(
    head: &RequestHead,
    verifier: Option<&Verifier>,
    metrics: &Metrics,
    window: &StatsWindow,
    keep_alive: bool,
) -> Vec<u8> {
    if let Some(v) = verifier {
        let query = parse_query(head.query.as_deref());
        let checked = match request_token(head, query.token.as_deref()) {
            None => Err(AuthError::Missing),
            Some(t) => v.verify(&t).map(|_| ()),
        };
        if let Err(e) = checked {
            return Refusal::unauthorized(&e).to_response(keep_alive);
        }
    }
    let stats = window.read(metrics, Instant::now(), crate::clock::wall_ms());
    let body = serde_json::to_vec(&stats).unwrap_or_default();
    response::response(200, "application/json", SECURITY_HEADERS, &body, keep_alive)
}

/// The body of `GET /api/stats`. Rates are per second over `window_seconds`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// Open WebSocket connections (the six channels and `/ws/echo`).
    pub connections: i64,
    pub connections_by_channel: serde_json::Map<String, serde_json::Value>,
    pub connections_total: u64,
    pub deliveries_per_second: f64,
    /// Delivery latency p99 over the window; `null` when nothing was delivered in it.
    pub delivery_latency_p99_ms: Option<f64>,
    pub events_published_per_second: f64,
    pub events_published_total: u64,
    pub messages_delivered_total: u64,
    pub slow_consumer_disconnects_total: u64,
    pub window_seconds: f64,
    pub uptime_seconds: f64,
    /// Milliseconds since the Unix epoch.
    pub server_time: u64,
    pub version: &'static str,
}

/// Counter values and latency buckets at one instant.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    at: Instant,
    published: u64,
    delivered: u64,
    /// Cumulative counts of the finite latency buckets, then the total count.
    buckets: Vec<u64>,
    count: u64,
}

impl Sample {
    fn take(m: &Metrics, at: Instant) -> Sample {
        let proto = m.delivery_latency.metric();
        let h = proto.get_histogram();
        Sample {
            at,
            published: m.events_published.get(),
            delivered: m.messages_delivered.get(),
            buckets: h
                .get_bucket()
                .iter()
                .map(|b| b.cumulative_count())
                .collect(),
            count: h.get_sample_count(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Rates {
    window: Duration,
    deliveries: f64,
    published: f64,
    p99_ms: Option<f64>,
}

fn rates(prev: &Sample, now: &Sample, bounds: &[f64]) -> Rates {
    let window = now.at.saturating_duration_since(prev.at);
    let secs = window.as_secs_f64().max(1e-3);
    // The histogram's buckets are read one by one while loops flush into them:
    // a later bucket may lag an earlier one by a few samples. Never go negative.
    let cum: Vec<u64> = now
        .buckets
        .iter()
        .zip(prev.buckets.iter().chain(std::iter::repeat(&0)))
        .map(|(n, p)| n.saturating_sub(*p))
        .collect();
    let total = now.count.saturating_sub(prev.count);
    Rates {
        window,
        deliveries: now.delivered.saturating_sub(prev.delivered) as f64 / secs,
        published: now.published.saturating_sub(prev.published) as f64 / secs,
        p99_ms: quantile(0.99, bounds, &cum, total).map(|s| s * 1000.0),
    }
}

/// The `q` quantile of a histogram given as cumulative bucket counts with their
/// upper bounds (seconds) plus the total count, interpolated linearly inside the
/// bucket as Prometheus' `histogram_quantile` does. Past the last finite bound the
/// answer is that bound. `None` for an empty histogram.
pub fn quantile(q: f64, bounds: &[f64], cumulative: &[u64], total: u64) -> Option<f64> {
    if total == 0 || bounds.is_empty() {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    let mut lower = 0.0;
    for (&upper, &cum) in bounds.iter().zip(cumulative) {
        // Keep the counts monotonic even if a read raced a flush.
        let cum = cum.max(below);
        if cum as f64 >= rank {
            let inside = (cum - below) as f64;
            if inside == 0.0 {
                return Some(upper);
            }
            return Some(lower + (upper - lower) * (rank - below as f64) / inside);
        }
        below = cum;
        lower = upper;
    }
    bounds.last().copied()
}

#[derive(Debug)]
struct Window {
    last: Sample,
    rates: Option<Rates>,
}

/// The previous sample and the rates computed from it, shared by every loop.
#[derive(Debug)]
pub struct StatsWindow {
    started: Instant,
    bounds: Vec<f64>,
    inner: Mutex<Window>,
}

impl StatsWindow {
    pub fn new(metrics: &Metrics) -> StatsWindow {
        let now = Instant::now();
        let proto = metrics.delivery_latency.metric();
        let bounds = proto
            .get_histogram()
            .get_bucket()
            .iter()
            .map(|b| b.upper_bound())
            .collect();
        StatsWindow {
            started: now,
            bounds,
            inner: Mutex::new(Window {
                last: Sample::take(metrics, now),
                rates: None,
            }),
        }
    }

    /// The stats at `now`. Rates cover the window since the previous sample.
    pub fn read(&self, m: &Metrics, now: Instant, wall_ms: u64) -> Stats {
        let rates = {
            // A panic elsewhere while holding the lock leaves plain numbers behind: still usable.
            let mut w = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let age = now.saturating_duration_since(w.last.at);
            match w.rates {
                Some(r) if age < MIN_WINDOW => r,
                _ => {
                    let sample = Sample::take(m, now);
                    let r = rates(&w.last, &sample, &self.bounds);
                    if age >= MIN_WINDOW {
                        w.last = sample;
                        w.rates = Some(r);
                    }
                    r
                }
            }
        };
        let mut by_channel = serde_json::Map::new();
        let mut connections = 0;
        for ch in Channel::ALL {
            let n = m.connections.with_label_values(&[ch.id()]).get();
            connections += n;
            by_channel.insert(ch.id().to_string(), n.into());
        }
        connections += m.connections.with_label_values(&[ECHO_LABEL]).get();
        let round = |x: f64| (x * 1000.0).round() / 1000.0;
        Stats {
            connections,
            connections_by_channel: by_channel,
            connections_total: m.connections_total.get(),
            deliveries_per_second: round(rates.deliveries),
            delivery_latency_p99_ms: rates.p99_ms.map(round),
            events_published_per_second: round(rates.published),
            events_published_total: m.events_published.get(),
            messages_delivered_total: m.messages_delivered.get(),
            slow_consumer_disconnects_total: m.slow_consumer_disconnects.get(),
            window_seconds: round(rates.window.as_secs_f64()),
            uptime_seconds: round(now.saturating_duration_since(self.started).as_secs_f64()),
            server_time: wall_ms,
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::LATENCY_BUCKETS;

    #[test]
    fn assets_and_headers() {
        for p in ["/console", "/console/", "/console/index.html"] {
            let a = asset(p).unwrap();
            assert!(a.content_type.starts_with("text/html"));
            assert!(std::str::from_utf8(a.body)
                .unwrap()
                .contains("/console/app.js"));
        }
        assert!(asset("/console/app.js")
            .unwrap()
            .content_type
            .starts_with("text/javascript"));
        assert!(asset("/console/app.css")
            .unwrap()
            .content_type
            .starts_with("text/css"));
        assert_eq!(asset("/console/../Cargo.toml"), None);
        assert_eq!(asset("/console/app.js.map"), None);
        let page = String::from_utf8(page_response("/console", true)).unwrap();
        assert!(page.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(page.contains(&format!("Content-Security-Policy: {CSP}\r\n")));
        assert!(page.contains("X-Content-Type-Options: nosniff\r\n"));
        let missing = String::from_utf8(page_response("/console/nope.js", true)).unwrap();
        assert!(missing.starts_with("HTTP/1.1 404 "));
    }

    #[test]
    fn the_page_names_nothing_from_elsewhere() {
        let html = std::str::from_utf8(INDEX_HTML).unwrap();
        for attr in ["src=\"", "href=\""] {
            for (i, _) in html.match_indices(attr) {
                let value = &html[i + attr.len()..];
                assert!(value.starts_with("/console/"), "{attr}{}", &value[..40]);
            }
        }
        let css = std::str::from_utf8(APP_CSS).unwrap();
        assert!(!css.contains("@import") && !css.contains("url("));
        let js = std::str::from_utf8(APP_JS).unwrap();
        assert!(!js.contains("import(") && !js.contains("importScripts"));
    }

    #[test]
    fn quantiles_interpolate_like_prometheus() {
        let bounds = [0.001, 0.01, 0.1];
        // 100 samples: 50 ≤ 1 ms, 40 in (1, 10] ms, 10 in (10, 100] ms.
        let cum = [50, 90, 100];
        assert_eq!(quantile(0.5, &bounds, &cum, 100), Some(0.001));
        let p99 = quantile(0.99, &bounds, &cum, 100).unwrap();
        assert!((p99 - 0.091).abs() < 1e-9, "{p99}");
        assert_eq!(quantile(0.99, &bounds, &cum, 0), None);
        // Beyond the last finite bucket: the last bound.
        assert_eq!(quantile(0.99, &bounds, &[0, 0, 0], 10), Some(0.1));
        // A count that raced a flush and went backwards is clamped, not subtracted.
        assert!(quantile(0.99, &bounds, &[50, 40, 100], 100).is_some());
    }

    #[test]
    fn rates_and_p99_over_the_window_only() {
        let m = Metrics::new();
        let w = StatsWindow::new(&m);
        assert_eq!(w.bounds, LATENCY_BUCKETS.to_vec());
        // Before the window: slow deliveries that must not count in the next one.
        for _ in 0..100 {
            m.delivery_latency.observe(2.0);
        }
        let t0 = Instant::now() + Duration::from_secs(1);
        let s0 = w.read(&m, t0, 0);
        assert_eq!(s0.delivery_latency_p99_ms, Some(2485.0));
        m.events_published.inc_by(30);
        m.messages_delivered.inc_by(300);
        for _ in 0..300 {
            m.delivery_latency.observe(0.0003);
        }
        m.connections.with_label_values(&["dashboard"]).set(3);
        let s = w.read(&m, t0 + Duration::from_secs(2), 42);
        assert_eq!(s.window_seconds, 2.0);
        assert_eq!(s.events_published_per_second, 15.0);
        assert_eq!(s.deliveries_per_second, 150.0);
        let p99 = s.delivery_latency_p99_ms.unwrap();
        assert!(
            p99 > 0.25 && p99 <= 0.5,
            "p99 {p99} ms within the (0.25, 0.5] ms bucket"
        );
        assert_eq!(s.connections, 3);
        assert_eq!(s.connections_by_channel["dashboard"], 3);
        assert_eq!(s.server_time, 42);
        // Sooner than MIN_WINDOW: the same window, not a new tiny one.
        let again = w.read(&m, t0 + Duration::from_millis(2500), 43);
        assert_eq!(again.deliveries_per_second, 150.0);
        assert_eq!(again.window_seconds, 2.0);
        // Nothing delivered in the next window: no p99 rather than a stale one.
        let quiet = w.read(&m, t0 + Duration::from_secs(4), 44);
        assert_eq!(quiet.deliveries_per_second, 0.0);
        assert_eq!(quiet.delivery_latency_p99_ms, None);
    }
}
