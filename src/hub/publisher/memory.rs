//! The memory engine's side of the publisher: it numbers every stream event
//! itself and holds every stream's whole state (`docs/protocol.md` §3).

use std::time::Instant;

use crate::engine::EngineEvent;
use crate::http::publish::PublishEvent;
use crate::hub::channels::SubscribeRequest;
use crate::hub::event::StreamId;

use super::{Engine, Publisher};

pub(super) struct Memory;

impl Engine for Memory {
    fn publish(&mut self, p: &mut Publisher, events: Vec<PublishEvent>) {
        p.publish(events);
    }

    /// The stream's state is here: the subscriber is answered at once.
    fn subscribe(&mut self, p: &mut Publisher, req: SubscribeRequest) {
        let id = p
            .streams
            .get_or_create(req.channel, &req.location, Instant::now());
        p.streams.subscribe(id, req.loop_id);
        p.answer(id, req);
    }

    /// A stream nobody watches stays for `--history-ttl` (the sweep drops it).
    fn unsubscribed(&mut self, _: &mut Publisher, _: StreamId) {}

    /// This engine has no threads of its own.
    fn on_engine(&mut self, _: &mut Publisher, _: EngineEvent) {}

    fn tick(&mut self, _: &mut Publisher, _: Instant) {}

    fn next_tick(&self) -> Option<Instant> {
        None
    }
}
