//! The memory engine's side of the publisher: it numbers every stream event
//! itself and holds every stream's whole state (`docs/protocol.md` §3).

use std::sync::Arc;
use std::time::Instant;

use crate::channel::Channel;
use crate::clock;
use crate::engine::EngineEvent;
use crate::http::publish::{ChannelSel, LocationSel, PublishEvent};
use crate::hub::channels::SubscribeRequest;
use crate::hub::event::{encode_event, Delivery, EventParts, StreamId};
use crate::hub::streams::HistEntry;

use super::{frame_for_loop, Engine, Publisher, MAX_BATCH};

pub(super) struct Memory;

impl Engine for Memory {
    /// Numbers each stream event, encodes its frame once, keeps it in history
    /// and batches it for every loop with subscribers of its stream.
    fn publish(&mut self, p: &mut Publisher, events: Vec<PublishEvent>) {
        let now = Instant::now();
        let published_at = clock::wall_ms();
        let stamp = clock::mono_ns();
        let mut count = 0u64;
        let mut targets: Vec<StreamId> = Vec::new();
        for ev in events {
            let event_type: Arc<str> = Arc::from(ev.event_type);
            let key: Arc<str> = match ev.key {
                Some(k) => Arc::from(k),
                None => event_type.clone(),
            };
            let explicit_key = (!Arc::ptr_eq(&key, &event_type)).then_some(&*key);
            let channels: &[Channel] = match &ev.channels {
                ChannelSel::All => &Channel::ALL,
                ChannelSel::List(l) => l,
            };
            for &channel in channels {
                targets.clear();
                match &ev.location {
                    LocationSel::One(loc) => {
                        targets.push(p.streams.get_or_create(channel, loc, now))
                    }
                    LocationSel::All => targets.extend(p.streams.live(channel)),
                }
                for &id in &targets {
                    let Some((seq, stream)) = p.streams.next_seq(id, now) else {
                        continue;
                    };
                    let frame = encode_event(&EventParts {
                        channel,
                        location: &stream.location,
                        event_type: &event_type,
                        key: explicit_key,
                        seq,
                        published_at_ms: published_at,
                        data: &ev.data,
                    });
                    let mut nth = 0;
                    for (loop_id, refs) in stream.loop_refs.iter().enumerate() {
                        if *refs > 0 {
                            p.pending[loop_id].push(Delivery {
                                stream: id,
                                seq,
                                event_type: event_type.clone(),
                                key: key.clone(),
                                frame: frame_for_loop(&frame, nth),
                                stamp,
                            });
                            nth += 1;
                        }
                    }
                    p.streams.record(
                        id,
                        key.clone(),
                        HistEntry {
                            seq,
                            event_type: event_type.clone(),
                            frame,
                        },
                    );
                    count += 1;
                    if p.pending.iter().any(|p| p.len() >= MAX_BATCH) {
                        p.flush();
                    }
                }
            }
        }
        p.metrics.events_published.inc_by(count);
        p.update_gauges();
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
