//! Validates a WebSocket upgrade request against the contract (docs/protocol.md §1, §4) and
//! decides the one refusal that wins when several apply:
//! 431, 404, 405, 400, 426, 503, 403 (Origin), 401, 403 (grant).
//! 431 is decided by the head parser and 404/405 by the router before this runs.

use base64::Engine as _;

use crate::auth::{bearer_token, AuthError, Verifier};
use crate::channel::{valid_event_type, Channel};
use crate::http::head::RequestHead;
use crate::http::response::Refusal;

/// What the handshake is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stream {
        channel: Channel,
        location: Box<str>,
    },
    Echo,
}

/// An accepted upgrade: everything the connection needs from the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    pub accept_key: String,
    pub target: Target,
    /// `events=` filter; `None` = every event of the stream.
    pub filter: Option<Vec<Box<str>>>,
    pub since: Option<u64>,
    pub epoch: Option<String>,
    /// `snapshot=1`: the stream's last values after the hello (docs/protocol.md §9).
    pub snapshot: bool,
    /// `conflate=1`: at most one unwritten live event per key (docs/protocol.md §9).
    pub conflate: bool,
    /// Unix seconds at which the token stops being valid (`exp`), when auth is on.
    pub token_exp: Option<u64>,
}

/// Most event types in a connection's filter (`events=`, `subscribe`): the
/// filter is checked for every event, and a client may not make that costly.
pub const MAX_FILTER_TYPES: usize = 256;

/// What the server knows besides the request.
pub struct UpgradeContext<'a> {
    /// The 503 to give: the server is draining or a connection limit is reached.
    pub busy: Option<Refusal>,
    pub allowed_origins: &'a [String],
    pub verifier: Option<&'a Verifier>,
}

/// The query parameters of the contract; the first occurrence of each wins.
/// `Debug` redacts the token.
#[derive(Default, PartialEq, Eq)]
pub struct Query {
    pub token: Option<String>,
    pub events: Option<String>,
    pub since: Option<String>,
    pub epoch: Option<String>,
    pub snapshot: Option<String>,
    pub conflate: Option<String>,
}

impl std::fmt::Debug for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Query")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("events", &self.events)
            .field("since", &self.since)
            .field("epoch", &self.epoch)
            .field("snapshot", &self.snapshot)
            .field("conflate", &self.conflate)
            .finish()
    }
}

pub fn parse_query(q: Option<&str>) -> Query {
    let mut out = Query::default();
    let Some(q) = q else { return out };
    for (k, v) in form_urlencoded::parse(q.as_bytes()) {
        let slot = match k.as_ref() {
            "token" => &mut out.token,
            "events" => &mut out.events,
            "since" => &mut out.since,
            "epoch" => &mut out.epoch,
            "snapshot" => &mut out.snapshot,
            "conflate" => &mut out.conflate,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(v.into_owned());
        }
    }
    out
}

/// The request's token (docs/protocol.md §1), `None` when there is none: `Authorization: Bearer`
/// wins over `?token=`, even when it is empty. Another scheme (`Basic` from a
/// proxy's own login) is not a token, so the query parameter still counts.
pub fn request_token(head: &RequestHead, query_token: Option<&str>) -> Option<String> {
    match head.authorization.as_deref().and_then(bearer_token) {
        Some(t) => Some(t),
        None => query_token,
    }
    .filter(|t| !t.is_empty())
    .map(str::to_string)
}

/// `0`, `1` or absent (docs/protocol.md §9); anything else is `None`.
fn flag(v: Option<&str>) -> Option<bool> {
    match v {
        None | Some("0") => Some(false),
        Some("1") => Some(true),
        Some(_) => None,
    }
}

/// Checks everything that is not the transport: the result is the upgrade or the refusal.
pub fn check_upgrade(
    head: &RequestHead,
    target: Target,
    ctx: &UpgradeContext<'_>,
) -> Result<Upgrade, Refusal> {
    // 400: a valid upgrade request.
    if head.minor_version != 1 {
        return Err(Refusal::bad_upgrade("WebSocket upgrades need HTTP/1.1"));
    }
    if !head.upgrade.iter().any(|t| t == "websocket") {
        return Err(Refusal::bad_upgrade(
            "not a WebSocket upgrade: missing `Upgrade: websocket`",
        ));
    }
    if !head.connection_has("upgrade") {
        return Err(Refusal::bad_upgrade(
            "not a WebSocket upgrade: missing `Connection: Upgrade`",
        ));
    }
    if head.duplicate_ws_key {
        return Err(Refusal::bad_upgrade(
            "Sec-WebSocket-Key must be sent exactly once",
        ));
    }
    let key = match &head.sec_websocket_key {
        Some(k)
            if base64::engine::general_purpose::STANDARD
                .decode(k)
                .is_ok_and(|d| d.len() == 16) =>
        {
            k.clone()
        }
        Some(_) => {
            return Err(Refusal::bad_upgrade(
                "Sec-WebSocket-Key must be 16 bytes in base64",
            ))
        }
        None => return Err(Refusal::bad_upgrade("missing Sec-WebSocket-Key")),
    };
    let Some(version) = &head.sec_websocket_version else {
        return Err(Refusal::bad_upgrade("missing Sec-WebSocket-Version"));
    };
    let query = parse_query(head.query.as_deref());
    let since = match &query.since {
        None => None,
        Some(s) => match s.parse::<u64>() {
            Ok(n) if s.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => return Err(Refusal::invalid_since()),
        },
    };
    let filter = match query.events.as_deref() {
        None | Some("") => None,
        Some(list) => {
            let mut types: Vec<Box<str>> = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for t in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                if !valid_event_type(t) {
                    return Err(Refusal::invalid_events(MAX_FILTER_TYPES));
                }
                if seen.insert(t) {
                    if types.len() == MAX_FILTER_TYPES {
                        return Err(Refusal::invalid_events(MAX_FILTER_TYPES));
                    }
                    types.push(t.into());
                }
            }
            if types.is_empty() {
                None
            } else {
                Some(types)
            }
        }
    };
    let snapshot = flag(query.snapshot.as_deref()).ok_or_else(Refusal::invalid_snapshot)?;
    let conflate = flag(query.conflate.as_deref()).ok_or_else(Refusal::invalid_conflate)?;
    // 426
    if version != "13" {
        return Err(Refusal::unsupported_version());
    }
    // 503
    if let Some(r) = &ctx.busy {
        return Err(r.clone());
    }
    // 403 for the Origin
    if let Some(origin) = &head.origin {
        if !ctx.allowed_origins.is_empty() && !ctx.allowed_origins.iter().any(|o| o == origin) {
            return Err(Refusal::origin_not_allowed());
        }
    }
    let mut token_exp = None;
    if let (Some(verifier), Target::Stream { channel, location }) = (ctx.verifier, &target) {
        // 401
        let Some(token) = request_token(head, query.token.as_deref()) else {
            return Err(Refusal::unauthorized(&AuthError::Missing));
        };
        let claims = verifier
            .verify(&token)
            .map_err(|e| Refusal::unauthorized(&e))?;
        // 403 for the grant
        if !claims.grants_subscription(channel.id(), location) {
            return Err(Refusal::not_granted(channel.id()));
        }
        token_exp = Some(claims.expires_at());
    }
    Ok(Upgrade {
        accept_key: tungstenite::handshake::derive_accept_key(key.as_bytes()),
        target,
        filter,
        since,
        epoch: query.epoch.filter(|e| !e.is_empty()),
        snapshot,
        conflate,
        token_exp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::{parse_head, HeadStatus};

    fn head(req: &str) -> RequestHead {
        match parse_head(req.as_bytes(), 8192) {
            Ok(HeadStatus::Complete { head, .. }) => *head,
            other => panic!("{other:?}"),
        }
    }

    fn upgrade_req(target: &str, extra: &str) -> String {
        format!(
            "GET {target} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    }

    fn stream() -> Target {
        Target::Stream {
            channel: Channel::Dashboard,
            location: "loc-1".into(),
        }
    }

    fn open_ctx() -> UpgradeContext<'static> {
        UpgradeContext {
            busy: None,
            allowed_origins: &[],
            verifier: None,
        }
    }

    #[test]
    fn accepts_and_derives_the_rfc_key() {
        let u = check_upgrade(
            &head(&upgrade_req(
                "/ws/dashboard/loc-1?events=A,B&since=41&epoch=e1",
                "",
            )),
            stream(),
            &open_ctx(),
        )
        .unwrap();
        // RFC 6455 §1.3 example.
        assert_eq!(u.accept_key, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(u.filter, Some(vec!["A".into(), "B".into()]));
        assert_eq!(u.since, Some(41));
        assert_eq!(u.epoch.as_deref(), Some("e1"));
        assert!(!u.snapshot && !u.conflate);
        let u = check_upgrade(
            &head(&upgrade_req(
                "/ws/dashboard/loc-1?snapshot=1&conflate=1",
                "",
            )),
            stream(),
            &open_ctx(),
        )
        .unwrap();
        assert!(u.snapshot && u.conflate);
        for (q, code) in [
            ("snapshot=yes", "invalid_snapshot"),
            ("snapshot=", "invalid_snapshot"),
            ("snapshot=2", "invalid_snapshot"),
            ("conflate=true", "invalid_conflate"),
            ("conflate=01", "invalid_conflate"),
        ] {
            let r = check_upgrade(
                &head(&upgrade_req(&format!("/ws/dashboard/loc-1?{q}"), "")),
                stream(),
                &open_ctx(),
            )
            .unwrap_err();
            assert_eq!((r.status, r.code), (400, code), "{q}");
        }
    }

    #[test]
    fn refusal_statuses() {
        let st = |req: String, ctx: &UpgradeContext| {
            check_upgrade(&head(&req), stream(), ctx)
                .err()
                .map(|r| r.status)
        };
        let plain = "GET /ws/dashboard/loc-1 HTTP/1.1\r\nHost: x\r\n\r\n".to_string();
        assert_eq!(st(plain, &open_ctx()), Some(400));
        let no_key = upgrade_req("/ws/dashboard/loc-1", "")
            .replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "");
        assert_eq!(st(no_key, &open_ctx()), Some(400));
        let bad_key =
            upgrade_req("/ws/dashboard/loc-1", "").replace("dGhlIHNhbXBsZSBub25jZQ==", "short");
        assert_eq!(st(bad_key, &open_ctx()), Some(400));
        let no_version =
            upgrade_req("/ws/dashboard/loc-1", "").replace("Sec-WebSocket-Version: 13\r\n", "");
        assert_eq!(st(no_version, &open_ctx()), Some(400));
        let v8 = upgrade_req("/ws/dashboard/loc-1", "").replace("Version: 13", "Version: 8");
        let r = check_upgrade(&head(&v8), stream(), &open_ctx()).unwrap_err();
        assert_eq!(r.status, 426);
        assert!(r.extra_headers.contains("Sec-WebSocket-Version: 13"));
        for since in ["-1", "abc", "", "1.5", "+3"] {
            let req = upgrade_req(&format!("/ws/dashboard/loc-1?since={since}"), "");
            assert_eq!(st(req, &open_ctx()), Some(400), "since={since}");
        }
        let busy = UpgradeContext {
            busy: Some(Refusal::draining()),
            ..open_ctx()
        };
        assert_eq!(st(upgrade_req("/ws/dashboard/loc-1", ""), &busy), Some(503));
        let two_keys = upgrade_req(
            "/ws/dashboard/loc-1",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        );
        assert_eq!(st(two_keys, &open_ctx()), Some(400));
        let many: Vec<String> = (0..=MAX_FILTER_TYPES).map(|i| format!("T{i}")).collect();
        let req = upgrade_req(
            &format!("/ws/dashboard/loc-1?events={}", many.join(",")),
            "",
        );
        assert_eq!(st(req, &open_ctx()), Some(400));
        let req = upgrade_req(
            &format!(
                "/ws/dashboard/loc-1?events={}",
                many[..MAX_FILTER_TYPES].join(",")
            ),
            "",
        );
        assert_eq!(st(req, &open_ctx()), None);
        let origins = vec!["https://app.example".to_string()];
        let ctx = UpgradeContext {
            allowed_origins: &origins,
            ..open_ctx()
        };
        assert_eq!(
            st(
                upgrade_req("/ws/dashboard/loc-1", "Origin: https://evil.example\r\n"),
                &ctx
            ),
            Some(403)
        );
        assert_eq!(
            st(
                upgrade_req("/ws/dashboard/loc-1", "Origin: https://app.example\r\n"),
                &ctx
            ),
            None
        );
        // No Origin at all: a non-browser client, never refused for it.
        assert_eq!(st(upgrade_req("/ws/dashboard/loc-1", ""), &ctx), None);
    }

    #[test]
    fn order_400_before_426_before_503() {
        let busy = UpgradeContext {
            busy: Some(Refusal::draining()),
            ..open_ctx()
        };
        let req =
            upgrade_req("/ws/dashboard/loc-1?since=x", "").replace("Version: 13", "Version: 8");
        assert_eq!(
            check_upgrade(&head(&req), stream(), &busy)
                .unwrap_err()
                .status,
            400
        );
        let req = upgrade_req("/ws/dashboard/loc-1", "").replace("Version: 13", "Version: 8");
        assert_eq!(
            check_upgrade(&head(&req), stream(), &busy)
                .unwrap_err()
                .status,
            426
        );
    }

    #[test]
    fn token_sources() {
        let tok = |extra: &str, q: Option<&str>| {
            request_token(&head(&upgrade_req("/ws/dashboard/loc-1", extra)), q)
        };
        assert_eq!(tok("", Some("q")).as_deref(), Some("q"));
        assert_eq!(tok("", Some("")), None);
        assert_eq!(tok("", None), None);
        assert_eq!(
            tok("Authorization: Bearer h\r\n", Some("q")).as_deref(),
            Some("h")
        );
        // An empty bearer credential was still sent: it wins, and is missing.
        assert_eq!(tok("Authorization: Bearer\r\n", Some("q")), None);
        // Another scheme is not a token: the query counts.
        assert_eq!(
            tok("Authorization: Basic dTpw\r\n", Some("q")).as_deref(),
            Some("q")
        );
        assert!(!format!("{:?}", parse_query(Some("token=abc.def"))).contains("abc"));
    }

    #[test]
    fn query_first_occurrence_wins_and_decodes() {
        let q = parse_query(Some("token=a%2Eb&token=zzz&events=X&other=1"));
        assert_eq!(q.token.as_deref(), Some("a.b"));
        assert_eq!(q.events.as_deref(), Some("X"));
        assert_eq!(q.since, None);
    }
}
