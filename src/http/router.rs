//! Path → route. Pure, so every path of the contract is unit-tested here.

use crate::channel::{valid_location_id, Channel};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'a> {
    /// One of the six BI endpoints. `location` is `Err` when the id is malformed (400).
    Stream {
        channel: Channel,
        location: Result<&'a str, ()>,
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

impl Route<'_> {
    /// Paths under `/ws/` answer 405 to any method but GET; the API paths name their own.
    pub fn allowed_method(&self) -> Option<&'static str> {
        match self {
            Route::Stream { .. } | Route::Echo => Some("GET"),
            Route::PublishEvents => Some("POST"),
            Route::Healthz | Route::Readyz | Route::Metrics => Some("GET"),
            Route::Console | Route::Stats => Some("GET"),
            Route::NotFound => None,
        }
    }
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
                    Err(())
                };
                return Route::Stream { channel, location };
            }
            // `/ws/dashboard` without an id names a known endpoint: a bad request, not 404.
            if path == &prefix[..prefix.len() - 1] {
                return Route::Stream {
                    channel,
                    location: Err(()),
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
                        location: Err(()),
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
