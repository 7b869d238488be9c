//! Every refusal and error reply of the HTTP side, by name: status, `error`
//! code and message in one table (`docs/protocol.md` §1, §5), the way
//! `metrics.rs` names metrics. Nothing else builds a [`Refusal`].

use crate::auth::AuthError;
use crate::config::MAX_PUBLISH_BODY;
use crate::http::framing::FramingError;
use crate::http::head::HeadError;
use crate::http::publish::PublishError;
use crate::http::response::Refusal;
use crate::http::router::Allowed;

/// Header sent with every 503 a client should simply retry.
const RETRY_AFTER: &str = "Retry-After: 1\r\n";

impl Refusal {
    // ---- the request itself (any path) ----

    /// 400/431 for a head that does not parse.
    pub fn malformed_head(e: &HeadError) -> Refusal {
        match e {
            HeadError::TooLarge => Refusal::new(
                431,
                "head_too_large",
                "the request head is larger than the limit",
            ),
            HeadError::Malformed(why) => Refusal::new(400, "bad_request", *why),
        }
    }

    /// 400/413/501 for a request whose framing cannot be trusted (RFC 9112 §6).
    pub fn framing(e: &FramingError) -> Refusal {
        let code = match e {
            FramingError::BodyTooLarge { .. } => "body_too_large",
            FramingError::UnsupportedCoding => "unsupported_transfer_coding",
            FramingError::UnexpectedBody => "unexpected_body",
            _ => "bad_request",
        };
        Refusal::new(e.status(), code, e.to_string())
    }

    /// 408: the head (or body) was not complete within its deadline.
    pub fn timeout() -> Refusal {
        Refusal::new(408, "timeout", "the request was not complete in time")
    }

    pub fn not_found() -> Refusal {
        Refusal::new(404, "not_found", "no such endpoint")
    }

    pub fn method_not_allowed(allowed: Allowed) -> Refusal {
        Refusal::new(
            405,
            "method_not_allowed",
            format!("use {}", allowed.names()),
        )
        .with_headers(allowed.header())
    }

    // ---- the WebSocket handshake (docs/protocol.md §1) ----

    pub fn invalid_location() -> Refusal {
        Refusal::new(
            400,
            "invalid_location",
            "location_id must match [A-Za-z0-9_.:-]{1,128}",
        )
    }

    /// 400 `bad_request`: not a valid upgrade; `why` says which part.
    pub fn bad_upgrade(why: &'static str) -> Refusal {
        Refusal::new(400, "bad_request", why)
    }

    pub fn invalid_since() -> Refusal {
        Refusal::new(
            400,
            "invalid_since",
            "`since` must be a non-negative integer (the last seq you saw)",
        )
    }

    pub fn invalid_events(max: usize) -> Refusal {
        Refusal::new(
            400,
            "invalid_events",
            format!(
                "`events` must be a comma-separated list of at most {max} event types \
                 ([A-Za-z0-9_.:-]{{1,64}})"
            ),
        )
    }

    pub fn invalid_snapshot() -> Refusal {
        Refusal::new(400, "invalid_snapshot", "`snapshot` must be 0 or 1")
    }

    pub fn invalid_conflate() -> Refusal {
        Refusal::new(400, "invalid_conflate", "`conflate` must be 0 or 1")
    }

    pub fn unsupported_version() -> Refusal {
        Refusal::new(
            426,
            "unsupported_version",
            "only Sec-WebSocket-Version 13 is supported",
        )
        .with_headers("Sec-WebSocket-Version: 13\r\n")
    }

    /// 503 while the server drains (SIGTERM/SIGINT): upgrades, connections
    /// still subscribing, and publishes all get this one code.
    pub fn draining() -> Refusal {
        Refusal::new(
            503,
            "draining",
            "the server is shutting down; connect or publish elsewhere",
        )
        .with_headers(RETRY_AFTER)
    }

    /// 503 `restarting`: a publish while a hand-over to a new process moves
    /// the state over (docs/protocol.md §11); the retry reaches the new process.
    pub fn restarting() -> Refusal {
        Refusal::new(
            503,
            "restarting",
            "the server is handing over to a new process; retry in a moment",
        )
        .with_headers(RETRY_AFTER)
    }

    /// 503 `unavailable`: a limit or a busy server, not a drain.
    pub fn unavailable(why: &'static str) -> Refusal {
        Refusal::new(503, "unavailable", why).with_headers(RETRY_AFTER)
    }

    pub fn connection_limit() -> Refusal {
        Refusal::unavailable("the connection limit is reached")
    }

    pub fn per_ip_limit() -> Refusal {
        Refusal::unavailable("too many connections from your address")
    }

    /// The publisher's inbox is full, or it did not register a subscription in time.
    pub fn subscribe_busy() -> Refusal {
        Refusal::unavailable("the server is too busy to subscribe you, retry shortly")
    }

    pub fn origin_not_allowed() -> Refusal {
        Refusal::new(403, "origin_not_allowed", "this Origin is not allowed")
    }

    /// 401 for any token problem (docs/protocol.md §4); the code names it.
    pub fn unauthorized(e: &AuthError) -> Refusal {
        Refusal::new(401, e.code(), e.message())
    }

    pub fn not_granted(channel: &str) -> Refusal {
        Refusal::new(
            403,
            "forbidden",
            format!("the token does not grant channel `{channel}` at this location"),
        )
    }

    /// Frames sent before the 101 beyond what the server keeps for later.
    pub fn early_data() -> Refusal {
        Refusal::new(
            400,
            "bad_request",
            "data sent before the handshake completed",
        )
    }

    // ---- the publish API (docs/protocol.md §5) ----

    pub fn not_a_publisher() -> Refusal {
        Refusal::new(
            403,
            "forbidden",
            "publishing needs a token with the `publish` scope",
        )
    }

    pub fn publish_not_granted(event_type: &str) -> Refusal {
        Refusal::new(
            403,
            "forbidden",
            format!("the token may not publish event `{event_type}` to this channel or location"),
        )
    }

    pub fn empty_body() -> Refusal {
        Refusal::new(
            400,
            "invalid_body",
            "the body is empty: send a JSON event or array",
        )
    }

    /// 400 naming the bad field, or 413 for too many events.
    pub fn invalid_publish(e: &PublishError) -> Refusal {
        let code = match e {
            PublishError::Invalid(_) => "invalid_event",
            PublishError::TooManyEvents(_) => "too_many_events",
            PublishError::EventTooLarge { .. } => "event_too_large",
        };
        Refusal::new(e.status(), code, e.to_string())
    }

    /// 413 for a `Content-Length` over the body limit (before reading it).
    pub fn body_too_large() -> Refusal {
        Refusal::framing(&FramingError::BodyTooLarge {
            limit: MAX_PUBLISH_BODY,
        })
    }

    pub fn publisher_behind() -> Refusal {
        Refusal::new(503, "overloaded", "the publisher is behind; retry shortly")
            .with_headers(RETRY_AFTER)
    }

    /// 503 with `--engine redis` while Redis cannot be reached (§10): publishes,
    /// upgrades and `/readyz` alike.
    pub fn engine_unavailable() -> Refusal {
        Refusal::new(
            503,
            "engine_unavailable",
            "the server cannot reach its Redis engine; retry shortly",
        )
        .with_headers(RETRY_AFTER)
    }

    pub fn publisher_gone() -> Refusal {
        Refusal::unavailable("the server is shutting down")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_503_says_when_to_retry() {
        for r in [
            Refusal::draining(),
            Refusal::connection_limit(),
            Refusal::per_ip_limit(),
            Refusal::subscribe_busy(),
            Refusal::publisher_behind(),
            Refusal::publisher_gone(),
            Refusal::engine_unavailable(),
            Refusal::restarting(),
        ] {
            assert_eq!(r.status, 503);
            assert!(r.extra_headers.contains("Retry-After"), "{r:?}");
        }
        assert_eq!(Refusal::draining().code, "draining");
    }

    #[test]
    fn framing_refusals_carry_their_status() {
        assert_eq!(
            Refusal::framing(&FramingError::UnsupportedCoding).status,
            501
        );
        assert_eq!(Refusal::body_too_large().status, 413);
        assert_eq!(Refusal::framing(&FramingError::UnexpectedBody).status, 400);
        let r = Refusal::method_not_allowed(Allowed::GetHead);
        assert_eq!(r.extra_headers, "Allow: GET, HEAD\r\n");
    }
}
