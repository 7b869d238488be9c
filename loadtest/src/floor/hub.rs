//! State shared by the floor's loops: per-stream seq numbers, which loops have
//! subscribers of which stream, and one inbox per loop for pre-framed events.
//!
//! A publish takes the hub lock once per request: it assigns each event its seq,
//! builds the event's frame once (WebSocket header + JSON) and pushes an `Arc` of it to
//! the inbox of every loop with subscribers of the stream, in seq order; loops are
//! woken after the lock is released.

use super::http::PubEvent;
use crate::wsframe::{encode_header, Opcode};
use mio::Waker;
use std::collections::HashMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// One pre-framed event for one loop.
pub struct Delivery {
    pub stream: u32,
    pub seq: u64,
    /// The whole WebSocket text frame, shared by every subscriber.
    pub frame: Arc<[u8]>,
}

/// A loop's inbox.
pub struct Inbox {
    queue: Mutex<Vec<Delivery>>,
    waker: Waker,
}

struct StreamState {
    channel: &'static str,
    location: String,
    /// Last seq assigned.
    seq: u64,
    /// Subscribers on each loop.
    subs: Vec<u32>,
}

#[derive(Default)]
struct State {
    ids: HashMap<(&'static str, String), u32>,
    streams: Vec<StreamState>,
}

/// Counters the floor prints.
#[derive(Default)]
pub struct Counters {
    pub connections: AtomicU64,
    pub published: AtomicU64,
    pub frames_queued: AtomicU64,
    pub slow_drops: AtomicU64,
}

/// The shared part of the floor server.
pub struct Hub {
    state: Mutex<State>,
    inboxes: Vec<Inbox>,
    pub counters: Counters,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A loop that panicked holding the lock leaves consistent data: seqs and counts.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Hub {
    /// A hub for loops woken by `wakers` (one per loop, in loop order).
    pub fn new(wakers: Vec<Waker>) -> Hub {
        Hub {
            state: Mutex::new(State::default()),
            inboxes: wakers
                .into_iter()
                .map(|waker| Inbox {
                    queue: Mutex::new(Vec::new()),
                    waker,
                })
                .collect(),
            counters: Counters::default(),
        }
    }

    fn intern(&self, st: &mut State, channel: &'static str, location: &str) -> u32 {
        if let Some(id) = st.ids.get(&(channel, location.to_owned())) {
            return *id;
        }
        let id = st.streams.len() as u32;
        st.streams.push(StreamState {
            channel,
            location: location.to_owned(),
            seq: 0,
            subs: vec![0; self.inboxes.len()],
        });
        st.ids.insert((channel, location.to_owned()), id);
        id
    }

    /// Registers a subscriber on loop `lp`: the stream id and its last seq.
    pub fn subscribe(&self, lp: usize, channel: &'static str, location: &str) -> (u32, u64) {
        let mut st = lock(&self.state);
        let id = self.intern(&mut st, channel, location);
        let s = &mut st.streams[id as usize];
        s.subs[lp] += 1;
        (id, s.seq)
    }

    /// Unregisters a subscriber of stream `id` on loop `lp`.
    pub fn unsubscribe(&self, lp: usize, id: u32) {
        let mut st = lock(&self.state);
        if let Some(s) = st.streams.get_mut(id as usize) {
            s.subs[lp] = s.subs[lp].saturating_sub(1);
        }
    }

    /// Publishes a request's events; answers how many event objects were accepted.
    pub fn publish(&self, events: &[PubEvent]) -> usize {
        let published_at = now_ms();
        let mut woken = vec![false; self.inboxes.len()];
        let mut total = 0u64;
        {
            let mut st = lock(&self.state);
            let mut targets: Vec<u32> = Vec::new();
            for ev in events {
                targets.clear();
                for &channel in &ev.channels {
                    match &ev.location {
                        Some(loc) => targets.push(self.intern(&mut st, channel, loc)),
                        None => targets.extend(
                            st.streams
                                .iter()
                                .enumerate()
                                .filter(|(_, s)| {
                                    s.channel == channel && s.subs.iter().any(|n| *n > 0)
                                })
                                .map(|(i, _)| i as u32),
                        ),
                    }
                }
                for &id in &targets {
                    let s = &mut st.streams[id as usize];
                    s.seq += 1;
                    total += 1;
                    let frame = build_frame(
                        s.channel,
                        &s.location,
                        &ev.event_type,
                        ev.key.as_deref(),
                        s.seq,
                        published_at,
                        ev.data,
                    );
                    for (lp, n) in s.subs.iter().enumerate() {
                        if *n > 0 {
                            lock(&self.inboxes[lp].queue).push(Delivery {
                                stream: id,
                                seq: s.seq,
                                frame: frame.clone(),
                            });
                            woken[lp] = true;
                        }
                    }
                }
            }
        }
        self.counters.published.fetch_add(total, Ordering::Relaxed);
        for (lp, w) in woken.iter().enumerate() {
            if *w {
                if let Err(e) = self.inboxes[lp].waker.wake() {
                    log::error!("floor: cannot wake loop {lp}: {e}");
                }
            }
        }
        events.len()
    }

    /// Takes everything queued for loop `lp` (swapping in `spare`, which must be empty).
    pub fn take(&self, lp: usize, spare: Vec<Delivery>) -> Vec<Delivery> {
        std::mem::replace(&mut *lock(&self.inboxes[lp].queue), spare)
    }
}

/// The frame of one event. Channel, location and event type are validated identifiers
/// (`[A-Za-z0-9_.:-]`), so they need no escaping; `data` is copied as published.
pub fn build_frame(
    channel: &str,
    location: &str,
    event_type: &str,
    key: Option<&str>,
    seq: u64,
    published_at: u64,
    data: &str,
) -> Arc<[u8]> {
    let mut json = Vec::with_capacity(144 + data.len());
    let _ = write!(
        json,
        r#"{{"type":"event","channel":"{channel}","location_id":"{location}","event_type":"{event_type}","#
    );
    if let Some(key) = key {
        let _ = write!(json, r#""key":"{key}","#);
    }
    let _ = write!(
        json,
        r#""seq":{seq},"published_at":{published_at},"data":{data}}}"#
    );
    let mut frame = Vec::with_capacity(json.len() + 10);
    encode_header(&mut frame, Opcode::Text, json.len(), None);
    frame.extend_from_slice(&json);
    frame.into()
}

/// The `BI_CONNECTION_ESTABLISHED` frame for a new subscriber.
pub fn established_frame(conn_id: &str, channel: &str, location: &str, last_seq: u64) -> Vec<u8> {
    let json = format!(
        r#"{{"type":"BI_CONNECTION_ESTABLISHED","connection_id":"{conn_id}","channel":"{channel}","location_id":"{location}","epoch":"floor","last_seq":{last_seq},"server_time":{},"heartbeat_interval_ms":0}}"#,
        now_ms()
    );
    let mut frame = Vec::with_capacity(json.len() + 4);
    encode_header(&mut frame, Opcode::Text, json.len(), None);
    frame.extend_from_slice(json.as_bytes());
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{parse, ServerMsg};
    use crate::wsframe::decode;

    #[test]
    fn frames_are_contract_events() {
        let f = build_frame(
            "dashboard",
            "loc-1",
            "LOADTEST",
            None,
            42,
            7,
            r#"{"t_ns":9}"#,
        );
        let h = decode(&f, false, 1 << 20).unwrap().unwrap();
        assert_eq!(h.frame_len(), f.len());
        let text = &f[h.payload_start..];
        let v: serde_json::Value = serde_json::from_slice(text).unwrap();
        assert_eq!(v["seq"], 42);
        assert_eq!(v["location_id"], "loc-1");
        let ServerMsg::Event(ev) = parse(text).unwrap() else {
            panic!("not an event")
        };
        assert_eq!((ev.seq, ev.t_ns, ev.warm), (42, Some(9), false));
        assert_eq!(ev.key, "LOADTEST");
        let f = build_frame("dashboard", "loc-1", "LOADTEST", Some("k3"), 43, 7, "null");
        let h = decode(&f, false, 1 << 20).unwrap().unwrap();
        let ServerMsg::Event(ev) = parse(&f[h.payload_start..]).unwrap() else {
            panic!("not an event")
        };
        assert_eq!((ev.seq, ev.key.as_ref()), (43, "k3"));
        let e = established_frame("f-0-1", "dashboard", "loc-1", 41);
        let h = decode(&e, false, 1 << 20).unwrap().unwrap();
        assert_eq!(
            parse(&e[h.payload_start..]).unwrap(),
            ServerMsg::Established { last_seq: 41 }
        );
    }

    #[test]
    fn seqs_count_per_stream_and_reach_subscribed_loops_only() {
        let poll0 = mio::Poll::new().unwrap();
        let poll1 = mio::Poll::new().unwrap();
        let hub = Hub::new(vec![
            Waker::new(poll0.registry(), mio::Token(0)).unwrap(),
            Waker::new(poll1.registry(), mio::Token(0)).unwrap(),
        ]);
        let (id, last) = hub.subscribe(1, "dashboard", "a");
        assert_eq!(last, 0);
        let body = br#"[{"channel":"dashboard","location_id":"a","event_type":"E"},
                        {"channel":"dashboard","location_id":"b","event_type":"E"},
                        {"channel":"*","location_id":"*","event_type":"E"}]"#;
        let events = super::super::http::parse_publish(body).unwrap();
        assert_eq!(hub.publish(&events), 3);
        assert!(hub.take(0, Vec::new()).is_empty());
        let got = hub.take(1, Vec::new());
        assert_eq!(
            got.iter().map(|d| (d.stream, d.seq)).collect::<Vec<_>>(),
            vec![(id, 1), (id, 2)]
        );
        // Stream b got seq 1 though nobody listens; a late subscriber sees it as last_seq.
        assert_eq!(hub.subscribe(0, "dashboard", "b").1, 1);
        assert_eq!(hub.subscribe(0, "dashboard", "a").1, 2);
    }
}
