//! The HTTP phase of a connection: request heads (split over any number of
//! reads), the upgrade to WebSocket, and the small API on the same listener
//! (`POST /api/events`, `/healthz`, `/readyz`, `/metrics`, and with `--console`
//! `/console` and `/api/stats`) with keep-alive.

use bytes::Bytes;
use crossbeam_channel::TrySendError;

use crate::auth::{AuthError, Claims};
use crate::channel::Channel;
use crate::config::MAX_PUBLISH_BODY;
use crate::http::client_addr::client_ip;
use crate::http::head::{has_head_end, parse_head, HeadError, HeadStatus, Method, RequestHead};
use crate::http::publish::{parse_body, ChannelSel, LocationSel, PublishEvent};
use crate::http::response::{self, Refusal};
use crate::http::router::{route, Route};
use crate::http::upgrade::{check_upgrade, parse_query, request_token, Target, UpgradeContext};
use crate::hub::publisher::{SubscribeRequest, ToPublisher};
use crate::hub::subscriptions::ConnRef;
use crate::server::close::{answer_and_close, readyz, refuse};
use crate::server::connection::{BodyWait, Connection, HttpState, State, Subscribing};
use crate::server::event_loop::{queue_reply, Ctx};
use crate::server::socket::Peer;

/// Works through everything buffered: pipelined requests are answered in order.
pub fn on_input(conn: &mut Connection, key: usize, cx: &mut Ctx) {
    loop {
        let State::Http(h) = &mut conn.state else {
            return;
        };
        if let Some(bw) = &h.body {
            let total = bw.head_len + bw.body_len;
            if conn.inbuf.len() < total {
                return;
            }
            let Some(bw) = h.body.take() else { return };
            let keep = publish(conn, key, cx, &bw, total);
            if !keep {
                return;
            }
            continue;
        }
        if conn.inbuf.is_empty() {
            return;
        }
        let max = cx.shared.config.max_head_size;
        if !has_head_end(&conn.inbuf, h.scanned) {
            h.scanned = conn.inbuf.len();
            if conn.inbuf.len() > max {
                refuse(conn, key, cx, too_large());
            }
            return;
        }
        match parse_head(&conn.inbuf, max) {
            Ok(HeadStatus::Partial) => {
                h.scanned = conn.inbuf.len();
                return;
            }
            Err(HeadError::TooLarge) => {
                refuse(conn, key, cx, too_large());
                return;
            }
            Err(HeadError::Malformed(why)) => {
                refuse(conn, key, cx, Refusal::new(400, "bad_request", why));
                return;
            }
            Ok(HeadStatus::Complete { head, len }) => {
                if !dispatch(conn, key, cx, head, len) {
                    return;
                }
            }
        }
    }
}

fn too_large() -> Refusal {
    Refusal::new(
        431,
        "head_too_large",
        "the request head is larger than the limit",
    )
}

/// Answers one request. True when the connection stays in the HTTP phase and
/// may have another request buffered.
fn dispatch(
    conn: &mut Connection,
    key: usize,
    cx: &mut Ctx,
    head: Box<RequestHead>,
    len: usize,
) -> bool {
    let shared = cx.shared.clone();
    let peer_ip = match conn.peer {
        Peer::Tcp(a) => Some(a.ip()),
        Peer::Unix => None,
    };
    conn.client = client_ip(
        peer_ip,
        head.x_forwarded_for.as_deref(),
        head.x_real_ip.as_deref(),
        &shared.config.trusted_proxies,
    );
    let r = match route(&head.path, shared.config.enable_echo) {
        Route::Console | Route::Stats if !shared.config.console => Route::NotFound,
        r => r,
    };
    let ws_path = head.path.starts_with("/ws/");
    if r == Route::NotFound {
        let refusal = Refusal::new(404, "not_found", "no such endpoint");
        if ws_path {
            refuse(conn, key, cx, refusal);
            return false;
        }
        return respond(
            conn,
            key,
            cx,
            &head,
            len,
            refusal.to_response(keep_alive(cx, &head)),
        );
    }
    let allowed = r.allowed_method().unwrap_or("GET");
    let method_ok = matches!(
        (head.method(), allowed),
        (Method::Get, "GET") | (Method::Post, "POST")
    );
    if !method_ok {
        let refusal = Refusal::new(405, "method_not_allowed", format!("use {allowed}"))
            .with_headers(if allowed == "POST" {
                "Allow: POST\r\n"
            } else {
                "Allow: GET\r\n"
            });
        refuse(conn, key, cx, refusal);
        return false;
    }
    match r {
        Route::Stream { channel, location } => {
            let Ok(location) = location else {
                refuse(
                    conn,
                    key,
                    cx,
                    Refusal::new(
                        400,
                        "invalid_location",
                        "location_id must match [A-Za-z0-9_.:-]{1,128}",
                    ),
                );
                return false;
            };
            let target = Target::Stream {
                channel,
                location: location.into(),
            };
            upgrade(conn, key, cx, &head, len, target);
            false
        }
        Route::Echo => {
            upgrade(conn, key, cx, &head, len, Target::Echo);
            false
        }
        Route::PublishEvents => begin_publish(conn, key, cx, head, len),
        Route::Healthz => {
            let body = response::json(
                200,
                &serde_json::json!({"status": "ok"}),
                keep_alive(cx, &head),
            );
            respond(conn, key, cx, &head, len, body)
        }
        Route::Readyz => {
            let body = readyz(cx.draining.is_some(), keep_alive(cx, &head));
            respond(conn, key, cx, &head, len, body)
        }
        Route::Metrics => {
            let body = response::response(
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                "",
                &shared.metrics.render(),
                keep_alive(cx, &head),
            );
            respond(conn, key, cx, &head, len, body)
        }
        Route::Console => {
            let body = crate::console::page_response(&head.path, keep_alive(cx, &head));
            respond(conn, key, cx, &head, len, body)
        }
        Route::Stats => {
            let body = crate::console::stats_response(
                &head,
                shared.verifier.as_ref(),
                &shared.metrics,
                &shared.stats,
                keep_alive(cx, &head),
            );
            respond(conn, key, cx, &head, len, body)
        }
        Route::NotFound => false,
    }
}

fn keep_alive(cx: &Ctx, head: &RequestHead) -> bool {
    head.keep_alive() && cx.draining.is_none()
}

/// Queues an API answer, consumes the request, and either waits for the next
/// request (keep-alive) or closes.
fn respond(
    conn: &mut Connection,
    key: usize,
    cx: &mut Ctx,
    head: &RequestHead,
    consumed: usize,
    bytes: Vec<u8>,
) -> bool {
    conn.inbuf.drain(..consumed.min(conn.inbuf.len()));
    if !keep_alive(cx, head) {
        answer_and_close(conn, key, cx, bytes);
        return false;
    }
    if !queue_reply(conn, key, cx, bytes) {
        return false;
    }
    if conn.inbuf.is_empty() {
        conn.inbuf = Vec::new();
    }
    conn.state = State::Http(HttpState {
        deadline: cx.now + cx.shared.config.keepalive_timeout,
        first: false,
        scanned: 0,
        body: None,
    });
    true
}

fn upgrade(
    conn: &mut Connection,
    key: usize,
    cx: &mut Ctx,
    head: &RequestHead,
    len: usize,
    target: Target,
) {
    let shared = cx.shared.clone();
    let per_ip = &shared.per_ip;
    if !conn.ip_slot && per_ip.enabled() {
        if let Some(ip) = conn.client {
            conn.ip_slot = per_ip.try_acquire(ip);
        }
    }
    let busy = if cx.draining.is_some() {
        Some("the server is shutting down")
    } else if conn.over_limit {
        Some("the connection limit is reached")
    } else if per_ip.enabled() && conn.client.is_some() && !conn.ip_slot {
        Some("too many connections from your address")
    } else {
        None
    };
    let ctx = UpgradeContext {
        busy,
        allowed_origins: &shared.config.allowed_origins,
        verifier: shared.verifier.as_ref(),
    };
    let up = match check_upgrade(head, target, &ctx) {
        Ok(up) => up,
        Err(r) => {
            refuse(conn, key, cx, r);
            return;
        }
    };
    // Bytes after the head are the client's first frames: keep them.
    conn.inbuf.drain(..len);
    match &up.target {
        Target::Echo => super::ws_conn::open_echo(conn, key, cx, &up),
        Target::Stream { channel, location } => {
            let req = SubscribeRequest {
                loop_id: cx.id,
                conn: ConnRef {
                    key: key as u32,
                    gen: conn.gen,
                },
                channel: *channel,
                location: location.clone(),
                since: up.since,
                epoch: up.epoch.clone(),
            };
            if cx.publisher.try_send(ToPublisher::Subscribe(req)).is_err() {
                refuse(
                    conn,
                    key,
                    cx,
                    Refusal::new(503, "unavailable", "the server is too busy, retry shortly"),
                );
                return;
            }
            let (channel, location) = (*channel, location.clone());
            conn.state = State::Subscribing(Box::new(Subscribing {
                deadline: cx.now + shared.config.handshake_timeout,
                upgrade: up,
                channel,
                location,
            }));
        }
    }
}

/// Validates the head of a publish and waits for its body.
fn begin_publish(
    conn: &mut Connection,
    key: usize,
    cx: &mut Ctx,
    head: Box<RequestHead>,
    len: usize,
) -> bool {
    let fail = |conn: &mut Connection, cx: &mut Ctx, status: u16, code: &'static str, msg: &str| {
        cx.shared
            .metrics
            .publish_requests
            .with_label_values(&[&status.to_string()])
            .inc();
        let r = Refusal::new(status, code, msg);
        answer_and_close(conn, key, cx, r.to_response(false));
        false
    };
    // Authorise on the head alone: an unauthenticated client gets its 401 before
    // it can make us buffer a body (up to 1 MiB) or send it `100 Continue`.
    let claims = match publish_auth(cx, &head) {
        Ok(claims) => claims,
        Err(r) => return fail(conn, cx, r.status, r.code, &r.message),
    };
    if head.chunked {
        return fail(
            conn,
            cx,
            411,
            "length_required",
            "send the body with Content-Length (chunked bodies are not accepted)",
        );
    }
    let body_len = match head.content_length {
        None => 0,
        Some(Ok(n)) if n > MAX_PUBLISH_BODY as u64 => {
            return fail(
                conn,
                cx,
                413,
                "body_too_large",
                "the body is larger than 1 MiB",
            );
        }
        Some(Ok(n)) => n as usize,
        Some(Err(())) => {
            return fail(conn, cx, 400, "bad_request", "invalid Content-Length");
        }
    };
    if head.expect_continue && conn.inbuf.len() < len + body_len {
        conn.out
            .push_unbounded(Bytes::from_static(response::CONTINUE), 0);
        cx.mark_dirty(key, conn);
    }
    if let State::Http(h) = &mut conn.state {
        h.body = Some(Box::new(BodyWait {
            head,
            head_len: len,
            body_len,
            claims,
        }));
    }
    true
}

/// The body is in: authorise, validate, hand to the publisher, answer 202.
fn publish(conn: &mut Connection, key: usize, cx: &mut Ctx, bw: &BodyWait, total: usize) -> bool {
    let result = publish_result(cx, bw.claims.as_ref(), &conn.inbuf[bw.head_len..total]);
    let (status, bytes) = match result {
        Ok(n) => (
            202,
            response::json(
                202,
                &serde_json::json!({"accepted": n}),
                keep_alive(cx, &bw.head),
            ),
        ),
        Err(r) => (r.status, r.to_response(keep_alive(cx, &bw.head))),
    };
    cx.shared
        .metrics
        .publish_requests
        .with_label_values(&[&status.to_string()])
        .inc();
    respond(conn, key, cx, &bw.head, total, bytes)
}

/// §4/§5: with auth on, a publisher token (401 without a valid one, 403 without
/// the `publish` scope). `None`: auth is off.
fn publish_auth(cx: &Ctx, head: &RequestHead) -> Result<Option<Claims>, Refusal> {
    let Some(v) = &cx.shared.verifier else {
        return Ok(None);
    };
    let query = parse_query(head.query.as_deref());
    let token = request_token(head, query.token.as_deref()).ok_or_else(|| {
        Refusal::new(401, AuthError::Missing.code(), AuthError::Missing.message())
    })?;
    let claims = v
        .verify(&token)
        .map_err(|e| Refusal::new(401, e.code(), e.message()))?;
    if !claims.is_publisher() {
        return Err(Refusal::new(
            403,
            "forbidden",
            "publishing needs a token with the `publish` scope",
        ));
    }
    Ok(Some(claims))
}

fn publish_result(cx: &mut Ctx, claims: Option<&Claims>, body: &[u8]) -> Result<usize, Refusal> {
    // A draining instance's clients are all being closed: an event accepted now
    // would reach nobody. 503 tells the publisher to retry on another instance.
    if cx.draining.is_some() {
        return Err(Refusal::new(
            503,
            "draining",
            "the server is shutting down; publish elsewhere",
        )
        .with_headers("Retry-After: 1\r\n"));
    }
    if body.is_empty() {
        return Err(Refusal::new(
            400,
            "invalid_body",
            "the body is empty: send a JSON event or array",
        ));
    }
    let events = parse_body(body).map_err(|e| {
        Refusal::new(
            e.status(),
            if e.status() == 413 {
                "too_many_events"
            } else {
                "invalid_event"
            },
            e.to_string(),
        )
    })?;
    if let Some(claims) = claims {
        if let Some(bad) = events.iter().find(|e| !grants(claims, e)) {
            return Err(Refusal::new(
                403,
                "forbidden",
                format!(
                    "the token may not publish event `{}` to this channel or location",
                    bad.event_type
                ),
            ));
        }
    }
    let n = events.len();
    if n == 0 {
        return Ok(0);
    }
    match cx.publisher.try_send(ToPublisher::Publish(events)) {
        Ok(()) => Ok(n),
        Err(TrySendError::Full(_)) => {
            Err(
                Refusal::new(503, "overloaded", "the publisher is behind; retry shortly")
                    .with_headers("Retry-After: 1\r\n"),
            )
        }
        Err(TrySendError::Disconnected(_)) => Err(Refusal::new(
            503,
            "unavailable",
            "the server is shutting down",
        )),
    }
}

fn grants(claims: &Claims, e: &PublishEvent) -> bool {
    let location = match &e.location {
        LocationSel::All => "*",
        LocationSel::One(l) => l,
    };
    match &e.channels {
        ChannelSel::All => claims.may_publish("*", location),
        ChannelSel::List(l) => l
            .iter()
            .all(|c: &Channel| claims.may_publish(c.id(), location)),
    }
}
