//! The HTTP phase of a connection: requests framed by `http::framing`
//! (split over any number of reads, pipelined, bodies by `Content-Length` or
//! chunked), the WebSocket upgrade, and the small API on the same listener
//! (`POST /api/events`, `/healthz`, `/readyz`, `/metrics`, and with
//! `--console` `/console` and `/api/stats`) with keep-alive.
//!
//! Answers the four calls of every phase: [`on_input`], [`on_timer`],
//! [`on_drain`], [`on_eof`].

use bytes::Bytes;
use crossbeam_channel::TrySendError;

use crate::auth::{AuthError, Claims};
use crate::channel::Channel;
use crate::clock;
use crate::config::MAX_PUBLISH_BODY;
use crate::http::client_addr::client_ip;
use crate::http::framing::{Framed, FramingError, RequestFramer};
use crate::http::head::{Method, RequestHead};
use crate::http::publish::{oversized, parse_body, ChannelSel, LocationSel, PublishEvent};
use crate::http::response::{self, Refusal};
use crate::http::router::{route, Route};
use crate::http::upgrade::{check_upgrade, parse_query, request_token, Target, UpgradeContext};
use crate::hub::channels::ToPublisher;
use crate::hub::subscriptions::ConnRef;
use crate::server::close::{answer_and_close, begin_closing, refuse};
use crate::server::connection::{Connection, HttpState, State, Step};
use crate::server::ctx::Ctx;
use crate::server::socket::Peer;

/// Requests answered per connection per wake-up before the others get a turn.
const REQUEST_BUDGET: usize = 64;

/// The state of a connection that was just accepted.
pub(crate) fn new_state(cx: &Ctx) -> Box<HttpState> {
    let config = &cx.shared.config;
    Box::new(HttpState {
        deadline: cx.now + config.handshake_timeout,
        first: true,
        framer: RequestFramer::new(config.max_head_size, MAX_PUBLISH_BODY),
        claims: None,
        paused: false,
        awaiting: None,
    })
}

/// What answering one request left the connection in.
enum Next {
    /// Still HTTP: the next pipelined request may follow.
    More,
    /// Closing (a refusal, `Connection: close`), or paused.
    Stop,
    Upgrade(Box<crate::http::upgrade::Upgrade>),
}

/// Works through everything buffered: pipelined requests are answered in order.
pub(crate) fn on_input(conn: &mut Connection, key: usize, cx: &mut Ctx) -> Step {
    let mut pos = 0;
    let mut budget = REQUEST_BUDGET;
    let mut want_continue = false;
    let step = loop {
        let Connection { state, inbuf, .. } = &mut *conn;
        let State::Http(h) = state else {
            break Step::Wait;
        };
        if h.paused || h.awaiting.is_some() {
            break Step::Wait;
        }
        if budget == 0 {
            break Step::Again;
        }
        let (framed, used) = h.framer.next(&inbuf[pos..]);
        pos += used;
        let next = match framed {
            Framed::NeedMore => {
                if want_continue {
                    // The body is not all here: tell the client to send it.
                    conn.out
                        .push_unbounded(Bytes::from_static(response::CONTINUE), 0);
                    cx.mark_dirty(key, conn);
                }
                break Step::Wait;
            }
            Framed::BodyStart => {
                let Some(head) = h.framer.head() else {
                    break Step::Wait;
                };
                // Authorise on the head alone: an unauthenticated client gets its
                // 401 before it can make us buffer a body or send `100 Continue`.
                match publish_auth(cx, head) {
                    Ok(claims) => {
                        want_continue = head.expect_continue;
                        h.claims = claims;
                        Next::More
                    }
                    Err(r) => {
                        publish_failed(conn, key, cx, r);
                        Next::Stop
                    }
                }
            }
            Framed::Request(head) => {
                budget -= 1;
                dispatch(conn, key, cx, &head)
            }
            Framed::WithBody(head, body) => {
                budget -= 1;
                want_continue = false;
                let claims = h.claims.take();
                publish(conn, key, cx, &head, claims.as_ref(), &body)
            }
            Framed::Invalid(head, e) => {
                invalid(conn, key, cx, &head, &e);
                Next::Stop
            }
            Framed::Malformed(e) => {
                refuse(conn, key, cx, Refusal::malformed_head(&e));
                Next::Stop
            }
        };
        match next {
            Next::More => continue,
            Next::Stop => break Step::Wait,
            Next::Upgrade(up) => {
                // Bytes after the head are the client's first frames: keep them.
                conn.inbuf.drain(..pos);
                return Step::Upgrade(up);
            }
        }
    };
    if matches!(conn.state, State::Http(_)) {
        conn.inbuf.drain(..pos.min(conn.inbuf.len()));
        if conn.inbuf.is_empty() {
            conn.inbuf = Vec::new();
        }
    }
    step
}

/// The request deadline passed.
pub(crate) fn on_timer(conn: &mut Connection, key: usize, cx: &mut Ctx) -> Step {
    let State::Http(h) = &conn.state else {
        return Step::Wait;
    };
    if cx.now < h.deadline {
        return Step::Wait;
    }
    if h.awaiting.is_some() {
        log::warn!(
            "publish on {} not answered by the engine in time",
            conn.peer
        );
        return Step::Remove;
    }
    if conn.inbuf.is_empty() && h.framer.is_idle() {
        // An idle keep-alive connection is simply closed; one that never sent
        // a byte is a failed handshake (counted as 408, though nothing is
        // written: there is no request to answer).
        if h.first && cx.draining.is_none() {
            cx.shared.metrics.handshake_failure(408);
        }
        return Step::Remove;
    }
    cx.shared.metrics.handshake_failure(408);
    answer_and_close(conn, key, cx, Refusal::timeout().to_response(false));
    Step::Wait
}

/// The server is draining. An idle connection is closed after a short grace
/// rather than at once: one accepted just before the signal may have its
/// request in flight (it gets its 503), and closing a socket with unread bytes
/// would reset it. A request in progress is answered with `Connection: close`.
pub(crate) fn on_drain(conn: &mut Connection, cx: &mut Ctx) -> Step {
    let idle = conn.inbuf.is_empty() && conn.out.is_empty();
    if let State::Http(h) = &mut conn.state {
        if idle && h.framer.is_idle() {
            h.deadline = h.deadline.min(cx.now + cx.shared.config.close_linger);
        }
    }
    Step::Wait
}

/// The peer half-closed after its requests: still answer what was asked.
pub(crate) fn on_eof(conn: &mut Connection, key: usize, cx: &mut Ctx) -> Step {
    if conn.out.is_empty() {
        return Step::Remove;
    }
    let until = cx.now + cx.shared.config.close_linger;
    begin_closing(conn, key, cx, until);
    crate::server::close::on_eof(conn)
}

/// Everything queued went out: a paused client may send its next requests.
/// True when there is buffered input to come back to.
pub(crate) fn resume(conn: &mut Connection) -> bool {
    match &mut conn.state {
        State::Http(h) if h.paused => {
            h.paused = false;
            true
        }
        _ => false,
    }
}

/// A request whose framing is refused. On `/ws/` paths a route's own refusal
/// keeps its precedence (404, 405 before 400, docs/protocol.md §1); either way the connection
/// closes, since where the next request would start is unknown.
fn invalid(conn: &mut Connection, key: usize, cx: &mut Ctx, head: &RequestHead, e: &FramingError) {
    if head.path.starts_with("/ws/") {
        let r = route(&head.path, cx.shared.config.enable_echo);
        match r.allowed() {
            None => return refuse(conn, key, cx, Refusal::not_found()),
            Some(a) if !a.permits(head.method()) => {
                return refuse(conn, key, cx, Refusal::method_not_allowed(a))
            }
            Some(_) => {}
        }
    }
    if head.method() == &Method::Post && head.path == "/api/events" {
        count_publish(cx, e.status());
    }
    refuse(conn, key, cx, Refusal::framing(e));
}

/// Answers one request without a body.
fn dispatch(conn: &mut Connection, key: usize, cx: &mut Ctx, head: &RequestHead) -> Next {
    let shared = cx.shared.clone();
    conn.client = match conn.peer {
        // docs/protocol.md §11: behind a PROXY header, X-Forwarded-For is ignored.
        Peer::Proxied(a) => Some(a.ip()),
        Peer::Tcp(a) => client_ip(
            Some(a.ip()),
            head.x_forwarded_for.as_deref(),
            head.x_real_ip.as_deref(),
            &shared.config.trusted_proxies,
        ),
        Peer::Unix => client_ip(
            None,
            head.x_forwarded_for.as_deref(),
            head.x_real_ip.as_deref(),
            &shared.config.trusted_proxies,
        ),
    };
    let r = match route(&head.path, shared.config.enable_echo) {
        Route::Console | Route::Stats if !shared.config.console => Route::NotFound,
        r => r,
    };
    let ws_path = head.path.starts_with("/ws/");
    let Some(allowed) = r.allowed() else {
        if ws_path {
            refuse(conn, key, cx, Refusal::not_found());
            return Next::Stop;
        }
        let bytes = Refusal::not_found().to_response(keep_alive(cx, head));
        return respond(conn, key, cx, head, bytes);
    };
    if !allowed.permits(head.method()) {
        refuse(conn, key, cx, Refusal::method_not_allowed(allowed));
        return Next::Stop;
    }
    let body = match r {
        Route::Stream { channel, location } => {
            let Ok(location) = location else {
                refuse(conn, key, cx, Refusal::invalid_location());
                return Next::Stop;
            };
            let target = Target::Stream {
                channel,
                location: location.into(),
            };
            return upgrade(conn, key, cx, head, target);
        }
        Route::Echo => return upgrade(conn, key, cx, head, Target::Echo),
        // A publish always has a body, even an empty one: it comes as `WithBody`.
        Route::PublishEvents | Route::NotFound => return Next::Stop,
        Route::Healthz => response::json(
            200,
            &serde_json::json!({"status": "ok"}),
            keep_alive(cx, head),
        ),
        Route::Readyz => readyz(cx, keep_alive(cx, head)),
        Route::Metrics => response::response(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            "",
            &shared.metrics.render(),
            keep_alive(cx, head),
        ),
        Route::Console => crate::console::page_response(&head.path, keep_alive(cx, head)),
        Route::Stats => crate::console::stats_response(
            head,
            shared.verifier.as_ref(),
            &shared.metrics,
            &shared.stats,
            keep_alive(cx, head),
        ),
    };
    let body = if head.method() == &Method::Head {
        response::head_only(body)
    } else {
        body
    };
    respond(conn, key, cx, head, body)
}

/// 503 while draining (docs/protocol.md §6) or while the Redis engine cannot
/// be reached (§10), so that a load balancer stops sending new clients.
fn readyz(cx: &Ctx, keep_alive: bool) -> Vec<u8> {
    if cx.draining.is_some() {
        response::json(503, &serde_json::json!({"status": "draining"}), false)
    } else if cx.shared.engine.as_ref().is_some_and(|e| !e.all_up()) {
        response::json(
            503,
            &serde_json::json!({"status": "engine_unavailable"}),
            keep_alive,
        )
    } else {
        response::json(200, &serde_json::json!({"status": "ready"}), keep_alive)
    }
}

fn keep_alive(cx: &Ctx, head: &RequestHead) -> bool {
    head.keep_alive() && cx.draining.is_none()
}

/// Queues an API answer and either waits for the next request (keep-alive) or
/// closes. Answers piling up for a client that does not read pause it: HTTP
/// has no slow-consumer close, so it simply is not read until they drain.
fn respond(
    conn: &mut Connection,
    key: usize,
    cx: &mut Ctx,
    head: &RequestHead,
    bytes: Vec<u8>,
) -> Next {
    if !keep_alive(cx, head) {
        answer_and_close(conn, key, cx, bytes);
        return Next::Stop;
    }
    conn.out.push_unbounded(Bytes::from(bytes), 0);
    cx.mark_dirty(key, conn);
    let over = conn.out.queued() > cx.shared.config.max_queue_bytes;
    let keepalive = cx.now + cx.shared.config.keepalive_timeout;
    let State::Http(h) = &mut conn.state else {
        return Next::Stop;
    };
    h.deadline = keepalive;
    h.first = false;
    if over {
        h.paused = true;
        return Next::Stop;
    }
    Next::More
}

fn upgrade(
    conn: &mut Connection,
    key: usize,
    cx: &mut Ctx,
    head: &RequestHead,
    target: Target,
) -> Next {
    let shared = cx.shared.clone();
    let per_ip = &shared.per_ip;
    if !conn.ip_slot && per_ip.enabled() {
        if let Some(ip) = conn.client {
            conn.ip_slot = per_ip.try_acquire(ip);
        }
    }
    let engine_down = match (&target, &shared.engine) {
        (Target::Stream { channel, location }, Some(e)) => !e.up_for(*channel, location),
        _ => false,
    };
    let busy = if cx.draining.is_some() {
        Some(Refusal::draining())
    } else if engine_down {
        Some(Refusal::engine_unavailable())
    } else if conn.over_limit {
        Some(Refusal::connection_limit())
    } else if per_ip.enabled() && conn.client.is_some() && !conn.ip_slot {
        Some(Refusal::per_ip_limit())
    } else {
        None
    };
    let ctx = UpgradeContext {
        busy,
        allowed_origins: &shared.config.allowed_origins,
        verifier: shared.verifier.as_ref(),
    };
    match check_upgrade(head, target, &ctx) {
        Ok(up) => Next::Upgrade(Box::new(up)),
        Err(r) => {
            refuse(conn, key, cx, r);
            Next::Stop
        }
    }
}

fn count_publish(cx: &Ctx, status: u16) {
    cx.shared
        .metrics
        .publish_requests
        .with_label_values(&[&status.to_string()])
        .inc();
}

/// A publish refused before its body was read: the body is not read, so the
/// connection cannot go on.
fn publish_failed(conn: &mut Connection, key: usize, cx: &mut Ctx, r: Refusal) {
    count_publish(cx, r.status);
    answer_and_close(conn, key, cx, r.to_response(false));
}

/// The body is in: validate, hand to the publisher (or the Redis engine,
/// whose answer comes later: [`on_published`]), answer 202.
fn publish(
    conn: &mut Connection,
    key: usize,
    cx: &mut Ctx,
    head: &RequestHead,
    claims: Option<&Claims>,
    body: &[u8],
) -> Next {
    let result = match publish_result(cx, claims, body) {
        Ok(Accepted::Later(events)) => {
            let engine = cx.shared.engine.clone();
            let Some(engine) = engine else {
                return Next::Stop;
            };
            let conn_ref = ConnRef {
                key: key as u32,
                gen: conn.gen,
            };
            match engine.publish(events, cx.id, conn_ref, clock::wall_ms()) {
                Ok(()) => {
                    // The engine answers within its I/O timeout; the deadline
                    // only guards against a bug leaving the connection forever.
                    let deadline = cx.now + cx.shared.config.handshake_timeout;
                    if let State::Http(h) = &mut conn.state {
                        h.awaiting = Some(Box::new(head.clone()));
                        h.deadline = deadline;
                    }
                    return Next::Stop;
                }
                Err(r) => Err(r),
            }
        }
        Ok(Accepted::Now(n)) => Ok(n),
        Err(r) => Err(r),
    };
    answer_publish(conn, key, cx, head, result)
}

/// The Redis engine answered a publish of this connection.
pub(crate) fn on_published(
    conn: &mut Connection,
    key: usize,
    cx: &mut Ctx,
    result: Result<usize, Refusal>,
) -> Step {
    let State::Http(h) = &mut conn.state else {
        return Step::Wait;
    };
    let Some(head) = h.awaiting.take() else {
        return Step::Wait;
    };
    match answer_publish(conn, key, cx, &head, result) {
        // Requests pipelined behind it are read now.
        Next::More => Step::Again,
        _ => Step::Wait,
    }
}

fn answer_publish(
    conn: &mut Connection,
    key: usize,
    cx: &mut Ctx,
    head: &RequestHead,
    result: Result<usize, Refusal>,
) -> Next {
    let (status, bytes) = match result {
        Ok(n) => (
            202,
            response::json(
                202,
                &serde_json::json!({"accepted": n}),
                keep_alive(cx, head),
            ),
        ),
        Err(r) => (r.status, r.to_response(keep_alive(cx, head))),
    };
    count_publish(cx, status);
    respond(conn, key, cx, head, bytes)
}

/// docs/protocol.md §4/§5: with auth on, a publisher token (401 without a valid one, 403 without
/// the `publish` scope). `None`: auth is off.
fn publish_auth(cx: &Ctx, head: &RequestHead) -> Result<Option<Claims>, Refusal> {
    let Some(v) = &cx.shared.verifier else {
        return Ok(None);
    };
    let query = parse_query(head.query.as_deref());
    let token = request_token(head, query.token.as_deref())
        .ok_or_else(|| Refusal::unauthorized(&AuthError::Missing))?;
    let claims = v.verify(&token).map_err(|e| Refusal::unauthorized(&e))?;
    if !claims.is_publisher() {
        return Err(Refusal::not_a_publisher());
    }
    Ok(Some(claims))
}

/// How a valid publish is accepted.
enum Accepted {
    /// By the publisher of this process (memory engine): answer now.
    Now(usize),
    /// By the Redis engine, which answers once Redis holds every event.
    Later(Vec<PublishEvent>),
}

fn publish_result(cx: &mut Ctx, claims: Option<&Claims>, body: &[u8]) -> Result<Accepted, Refusal> {
    // A draining instance's clients are all being closed: an event accepted now
    // would reach nobody. 503 tells the publisher to retry on another instance.
    if cx.draining.is_some() {
        return Err(Refusal::draining());
    }
    // docs/protocol.md §11: the state is being handed over; a publish accepted
    // now would be missing from it.
    if cx.shared.handing_over() {
        return Err(Refusal::restarting());
    }
    if body.is_empty() {
        return Err(Refusal::empty_body());
    }
    let events = parse_body(body).map_err(|e| Refusal::invalid_publish(&e))?;
    if let Some(e) = oversized(&events, cx.shared.config.max_queue_bytes) {
        return Err(Refusal::invalid_publish(&e));
    }
    if let Some(claims) = claims {
        if let Some(bad) = events.iter().find(|e| !grants(claims, e)) {
            return Err(Refusal::publish_not_granted(&bad.event_type));
        }
    }
    let n = events.len();
    if n == 0 {
        return Ok(Accepted::Now(0));
    }
    if cx.shared.engine.is_some() {
        return Ok(Accepted::Later(events));
    }
    match cx.publisher.try_send(ToPublisher::Publish(events)) {
        Ok(()) => Ok(Accepted::Now(n)),
        Err(TrySendError::Full(_)) => Err(Refusal::publisher_behind()),
        Err(TrySendError::Disconnected(_)) => Err(Refusal::publisher_gone()),
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
