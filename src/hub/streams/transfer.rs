//! [`Streams`] to and from a [`State`] (docs/protocol.md §11): what the old
//! process's publisher exports once every loop is fenced, and what the new
//! process's publisher starts from, before any loop accepts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::{HistEntry, Stream, Streams};
use crate::hub::event::StreamId;
use crate::hub::last_values::LastValue;
use crate::hub::transfer::{HistoryRecord, LastValueRecord, State, StreamState};

/// What an import brought in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Imported {
    pub streams: usize,
    pub history: usize,
    pub last_values: usize,
}

impl Streams {
    /// Every stream with its epoch, seq, history and last values; history and
    /// last values in publish order across streams, so the byte caps of the
    /// new process evict in the same order this one would have.
    pub fn export(&self) -> State {
        let mut ids: Vec<StreamId> = self.by_id.keys().copied().collect();
        ids.sort_unstable();
        let mut index: HashMap<StreamId, u32> = HashMap::with_capacity(ids.len());
        let mut streams = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(s) = self.by_id.get(&id) else {
                continue;
            };
            index.insert(id, streams.len() as u32);
            streams.push(StreamState {
                channel: s.channel,
                location: s.location.clone(),
                epoch: s.epoch.clone(),
                seq: s.seq,
            });
        }
        let history = self.history_in_publish_order(&index);
        let last_values = self
            .last_values
            .all_entries()
            .into_iter()
            .filter_map(|(id, key, v)| {
                Some(LastValueRecord {
                    stream: *index.get(&id)?,
                    key,
                    seq: v.seq,
                    event_type: v.event_type,
                    frame: v.frame,
                })
            })
            .collect();
        State {
            streams,
            history,
            last_values,
        }
    }

    /// The FIFO of the byte cap names every kept entry in publish order (and
    /// some already evicted, recognised by a seq below their ring's front).
    /// Rings are contiguous in seq, so each entry is found by arithmetic.
    fn history_in_publish_order(&self, index: &HashMap<StreamId, u32>) -> Vec<HistoryRecord> {
        let mut out = Vec::with_capacity(self.entries);
        for &(id, seq, _) in &self.fifo {
            let (Some(s), Some(&stream)) = (self.by_id.get(&id), index.get(&id)) else {
                continue;
            };
            let Some(front) = s.ring.front() else {
                continue;
            };
            let Some(e) = seq
                .checked_sub(front.seq)
                .and_then(|i| s.ring.get(usize::try_from(i).ok()?))
                .filter(|e| e.seq == seq)
            else {
                continue;
            };
            out.push(record(stream, e));
        }
        if out.len() != self.entries {
            // Never expected; stream by stream is still a complete history.
            log::warn!(
                "hand-over: history order not recoverable ({} of {} entries); exporting per stream",
                out.len(),
                self.entries
            );
            out.clear();
            for (id, &stream) in index {
                if let Some(s) = self.by_id.get(id) {
                    out.extend(s.ring.iter().map(|e| record(stream, e)));
                }
            }
        }
        out
    }

    /// Brings in an exported state: each stream keeps its epoch and seq, so
    /// that numbering continues without a gap or a reuse and a client's
    /// `since`/`epoch` stays valid. Call on an empty `Streams`, before any
    /// publish or subscription. This process's bounds apply: history past
    /// `history_size` or the byte caps is evicted oldest first, as it would be
    /// here.
    pub fn import(&mut self, state: State, now: Instant) -> Imported {
        let mut done = Imported::default();
        let mut ids = Vec::with_capacity(state.streams.len());
        for s in state.streams {
            ids.push(self.insert_imported(s, now));
            done.streams += 1;
        }
        for h in state.history {
            let Some(&id) = ids.get(h.stream as usize) else {
                continue;
            };
            if self.history_size > 0 {
                self.keep_history(
                    id,
                    HistEntry {
                        seq: h.seq,
                        event_type: h.event_type,
                        frame: h.frame,
                    },
                );
                done.history += 1;
            }
        }
        for l in state.last_values {
            let Some(&id) = ids.get(l.stream as usize) else {
                continue;
            };
            if self.last_values.enabled() {
                self.last_values
                    .record(id, l.key, LastValue::new(l.seq, l.event_type, l.frame));
                done.last_values += 1;
            }
        }
        done
    }

    fn insert_imported(&mut self, s: StreamState, now: Instant) -> StreamId {
        let id = self.next_id;
        self.next_id += 1;
        self.by_key[s.channel.index()].insert(s.location.clone(), id);
        self.by_id.insert(
            id,
            Stream {
                id,
                channel: s.channel,
                location: s.location,
                epoch: s.epoch,
                seq: s.seq,
                ring: Default::default(),
                loop_refs: vec![0; self.loops],
                subscribers: 0,
                // The TTL counts from the import: its clients are reconnecting.
                idle_since: now,
            },
        );
        id
    }

    /// The history half of `record`, with the same bounds.
    fn keep_history(&mut self, id: StreamId, entry: HistEntry) {
        let Some(s) = self.by_id.get_mut(&id) else {
            return;
        };
        let len = entry.frame.len();
        self.fifo.push_back((id, entry.seq, len));
        s.ring.push_back(entry);
        self.bytes += len;
        self.entries += 1;
        if s.ring.len() > self.history_size {
            if let Some(old) = s.ring.pop_front() {
                self.bytes -= old.frame.len();
                self.entries -= 1;
            }
        }
        self.enforce_byte_cap();
    }
}

fn record(stream: u32, e: &HistEntry) -> HistoryRecord {
    HistoryRecord {
        stream,
        seq: e.seq,
        event_type: Arc::clone(&e.event_type),
        frame: e.frame.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::Channel;
    use crate::hub::event::{encode_event, EventParts};
    use crate::hub::streams::Limits;
    use crate::hub::transfer::{decode, encode};
    use serde_json::value::RawValue;

    fn streams(prefix: &str, history_size: usize, max_bytes: usize) -> Streams {
        Streams::new(
            prefix,
            2,
            &Limits {
                history_size,
                history_max_bytes: max_bytes,
                last_values: 16,
                last_values_max_bytes: 1 << 20,
            },
        )
    }

    fn publish(s: &mut Streams, ch: Channel, loc: &str, key: &str, now: Instant) -> u64 {
        let id = s.get_or_create(ch, loc, now);
        let (seq, stream) = s.next_seq(id, now).unwrap();
        let data = RawValue::from_string(format!("{{\"n\":{seq}}}")).unwrap();
        let frame = encode_event(&EventParts {
            channel: ch,
            location: &stream.location,
            event_type: "E",
            key: Some(key),
            seq,
            published_at_ms: 1,
            data: &data,
        });
        s.record(
            id,
            Arc::from(key),
            HistEntry {
                seq,
                event_type: Arc::from("E"),
                frame,
            },
        );
        seq
    }

    fn id(s: &Streams, ch: Channel, loc: &str) -> StreamId {
        s.by_key[ch.index()][loc]
    }

    #[test]
    fn numbering_history_and_last_values_carry_over() {
        let now = Instant::now();
        let mut old = streams("old", 5, 1 << 20);
        for i in 0..20 {
            publish(
                &mut old,
                Channel::Dashboard,
                "a",
                &format!("k{}", i % 3),
                now,
            );
            if i % 2 == 0 {
                publish(&mut old, Channel::AiConcierge, "b", "only", now);
            }
        }
        let a_old = id(&old, Channel::Dashboard, "a");
        let epoch_a = old.get(a_old).unwrap().epoch.clone();
        let state = decode(&encode(&old.export())).unwrap();
        assert_eq!(state.streams.len(), 2);
        // Interleaved publish order is kept: a's and b's entries alternate at the end.
        assert_eq!(state.history.len(), 10);

        let mut new = streams("new", 5, 1 << 20);
        assert!(!state.uses_epoch_prefix("new"));
        let done = new.import(state, now);
        assert_eq!((done.streams, done.history, done.last_values), (2, 10, 4));
        assert_eq!(new.history_bytes(), old.history_bytes());
        let a = id(&new, Channel::Dashboard, "a");
        assert_eq!(new.get(a).unwrap().epoch, epoch_a);
        assert_eq!(new.get(a).unwrap().seq, 20);
        // The replay a client gets after the hand-over is the one it got before.
        assert_eq!(new.replay(a, 17, true), old.replay(a_old, 17, true));
        assert!(new.replay(a, 15, true).complete);
        assert!(!new.replay(a, 14, true).complete);
        // seq goes on from where it was.
        assert_eq!(publish(&mut new, Channel::Dashboard, "a", "k0", now), 21);
        assert_eq!(new.snapshot(a, 0..u64::MAX).len(), 3);
        // A new stream gets an epoch of this process.
        let c = new.get_or_create(Channel::Dashboard, "c", now);
        assert!(new.get(c).unwrap().epoch.starts_with("new-"));
    }

    #[test]
    fn the_new_process_bounds_apply_oldest_first() {
        let now = Instant::now();
        let mut old = streams("old", 100, 1 << 20);
        // Seqs of one digit: every frame is the same length.
        for _ in 0..9 {
            publish(&mut old, Channel::Dashboard, "a", "k", now);
            publish(&mut old, Channel::Dashboard, "b", "k", now);
        }
        let one = old.by_id[&id(&old, Channel::Dashboard, "a")]
            .ring
            .front()
            .unwrap()
            .frame
            .len();
        // Room for ten frames: the ten newest (5..=9 of each stream) survive.
        let mut new = streams("new", 100, 10 * one);
        new.import(old.export(), now);
        let a = id(&new, Channel::Dashboard, "a");
        let b = id(&new, Channel::Dashboard, "b");
        let first = |s: StreamId| new.replay(s, 0, true).entries.first().map(|e| e.seq);
        assert_eq!((first(a), first(b)), (Some(5), Some(5)));
        assert!(new.history_bytes() <= 10 * one);
    }

    #[test]
    fn an_empty_state_imports_nothing() {
        let mut new = streams("new", 10, 1 << 20);
        assert_eq!(
            new.import(State::default(), Instant::now()),
            Imported::default()
        );
        assert!(new.is_empty());
    }
}
