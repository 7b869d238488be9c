//! Path → route. Pure, so every path of the contract is unit-tested here.

use crate::channel::{valid_location_id, Channel};
use crate::http::head::Method;

/// A path under a channel's endpoint whose `{location_id}` is not valid (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidLocation;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'a> {
    /// One of the six BI endpoints.
    Stream {
        channel: Channel,
        location: Result<&'a str, InvalidLocation>,
    },
    Echo,
    PublishEvents,
    Healthz,
    Readyz,
    Metrics,
    /// `/console` and the files under it (served only with `--console`).
    Console,
    /// `GET /api/stats` (only with `--console`).
    Stats,
    NotFound,
}

/// The methods a route answers, for the check and for the `Allow` header of a 405.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowed {
    Get,
    /// `GET` and `HEAD` (the probes and metrics: a `HEAD` gets the headers alone).
    GetHead,
    Post,
}

impl Allowed {
    pub fn permits(self, m: &Method) -> bool {
        matches!(
            (self, m),
            (Allowed::Get | Allowed::GetHead, Method::Get)
                | (Allowed::GetHead, Method::Head)
                | (Allowed::Post, Method::Post)
        )
    }

    /// The `Allow` header line of a 405.
    pub fn header(self) -> &'static str {
        match self {
            Allowed::Get => "Allow: GET\r\n",
            Allowed::GetHead => "Allow: GET, HEAD\r\n",
            Allowed::Post => "Allow: POST\r\n",
        }
    }

    pub fn names(self) -> &'static str {
        match self {
            Allowed::Get => "GET",
            Allowed::GetHead => "GET or HEAD",
            Allowed::Post => "POST",
        }
    }
}

impl Route<'_> {
    /// Paths under `/ws/` answer 405 to any method but GET; the API paths name their own.
    pub fn allowed(&self) -> Option<Allowed> {
        match self {
            Route::Stream { .. } | Route::Echo => Some(Allowed::Get),
            Route::PublishEvents => Some(Allowed::Post),
            Route::Healthz | Route::Readyz | Route::Metrics => Some(Allowed::GetHead),
            Route::Console | Route::Stats => Some(Allowed::Get),
            Route::NotFound => None,
        }
    }
}

/// Does this request carry a body by design? Only a publish does; a body on
/// any other request is refused (`http::framing`), never skipped or parsed.
pub fn takes_body(method: &Method, path: &str) -> bool {
    *method == Method::Post && path == "/api/events"
}

pub fn route(path: &str, echo_enabled: bool) -> Route<'_> {
    if path.starts_with("/ws/") {
        if path == "/ws/echo" {
            return if echo_enabled {
                Route::Echo
            } else {
                Route::NotFound
            };
        }
        for channel in Channel::ALL {
            let prefix = channel.path_prefix();
            if let Some(rest) = path.strip_prefix(prefix) {
                let location = if valid_location_id(rest) {
                    Ok(rest)
                } else {
                    Err(InvalidLocation)
                };
                return Route::Stream { channel, location };
            }
            // `/ws/dashboard` without an id names a known endpoint: a bad request, not 404.
            if path == &prefix[..prefix.len() - 1] {
                return Route::Stream {
                    channel,
                    location: Err(InvalidLocation),
                };
            }
        }
        return Route::NotFound;
    }
    match path {
        "/api/events" => Route::PublishEvents,
        "/healthz" => Route::Healthz,
        "/readyz" => Route::Readyz,
        "/metrics" => Route::Metrics,
        "/api/stats" => Route::Stats,
        "/console" => Route::Console,
        p if p.starts_with("/console/") => Route::Console,
        _ => Route::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_six_endpoints() {
        let cases = [
            ("/ws/dashboard/loc-1", Channel::Dashboard),
            (
                "/ws/bi/revenue-intelligence/loc-1",
                Channel::RevenueIntelligence,
            ),
            ("/ws/bot-performance/loc-1", Channel::BotPerformance),
            (
                "/ws/business-intelligence/loc-1",
                Channel::BusinessIntelligence,
            ),
            ("/ws/ai-concierge/loc-1", Channel::AiConcierge),
            ("/ws/analytics/advanced/loc-1", Channel::AnalyticsAdvanced),
        ];
        for (path, channel) in cases {
            assert_eq!(
                route(path, false),
                Route::Stream {
                    channel,
                    location: Ok("loc-1")
                },
                "{path}"
            );
        }
    }

    #[test]
    fn bad_locations_are_400_not_404() {
        for p in [
            "/ws/dashboard/",
            "/ws/dashboard",
            "/ws/dashboard/a/b",
            "/ws/dashboard/%41",
            "/ws/dashboard/..",
            "/ws/dashboard/a/../b",
        ] {
            assert!(
                matches!(
                    route(p, false),
                    Route::Stream {
                        location: Err(InvalidLocation),
                        ..
                    }
                ),
                "{p}"
            );
        }
    }

    #[test]
    fn unknown_and_api_paths() {
        assert_eq!(route("/ws/unknown/loc", false), Route::NotFound);
        assert_eq!(route("/ws/bi/loc", false), Route::NotFound);
        assert_eq!(route("/", false), Route::NotFound);
        assert_eq!(route("/api/events", false), Route::PublishEvents);
        assert_eq!(route("/api/events/", false), Route::NotFound);
        assert_eq!(route("/healthz", false), Route::Healthz);
        assert_eq!(route("/readyz", false), Route::Readyz);
        assert_eq!(route("/metrics", false), Route::Metrics);
        assert_eq!(route("/api/stats", false), Route::Stats);
        assert_eq!(route("/console", false), Route::Console);
        assert_eq!(route("/console/app.js", false), Route::Console);
        assert_eq!(route("/consolex", false), Route::NotFound);
    }

    #[test]
    fn echo_only_when_enabled() {
        assert_eq!(route("/ws/echo", false), Route::NotFound);
        assert_eq!(route("/ws/echo", true), Route::Echo);
    }
}
