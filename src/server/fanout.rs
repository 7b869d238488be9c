//! Fan-out: each event frame is a shared `Bytes`, pushed to the queue of every
//! matching connection of this loop; the sockets are written once per
//! iteration (`docs/protocol.md` §2, §6).

use slab::Slab;

use crate::hub::event::Delivery;
use crate::server::connection::{passes, Connection, State, WsKind};
use crate::server::ctx::Ctx;

/// Queues one delivery for its stream's connections. Connections whose queue
/// would pass the bound are put in `slow`, for the caller to close (1013)
/// before the next delivery, so that none of them gets a later event first.
pub(crate) fn deliver(
    conns: &mut Slab<Connection>,
    cx: &mut Ctx,
    d: &Delivery,
    slow: &mut Vec<usize>,
) {
    let limit = cx.shared.config.max_queue_bytes;
    {
        for c in cx.subs.get(d.stream) {
            let key = c.key as usize;
            let Some(conn) = conns.get_mut(key) else {
                continue;
            };
            if conn.gen != c.gen {
                continue;
            }
            let State::Open(ws) = &conn.state else {
                continue;
            };
            let WsKind::Stream {
                filter, conflate, ..
            } = &ws.kind
            else {
                continue;
            };
            if !passes(filter.as_deref(), &d.event_type) {
                continue;
            }
            let pushed = if *conflate {
                conn.out
                    .push_conflated(d.frame.clone(), d.stamp, &d.key, limit)
                    .map(|dropped| cx.lm.conflated += dropped)
            } else {
                conn.out.push(d.frame.clone(), d.stamp, limit)
            };
            if pushed.is_err() {
                slow.push(key);
                continue;
            }
            if !conn.dirty {
                conn.dirty = true;
                cx.dirty.push(key);
            }
        }
    }
}
