//! The publisher's side of a hand-over (docs/protocol.md §11): export the
//! state only once every loop has passed its fence, and publish nothing after
//! it, so that no publish answered 202 is left out of the state and no `seq`
//! is used twice.
//!
//! A loop answers 202 once its `try_send` of the publish to this inbox
//! succeeded. Before the export the server sets a flag that makes every loop
//! refuse publishes (503) and sends each loop a fence; a loop that reads its
//! fence answers with [`HandoverMsg::Fenced`] on this same inbox, behind every
//! publish it accepted before. When all fences are in, the state is complete.

use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::hub::streams::Streams;
use crate::hub::transfer;

pub enum HandoverMsg {
    /// Export as soon as every loop's fence of `attempt` is in, and from then
    /// on publish nothing until [`HandoverMsg::Resume`].
    Begin {
        attempt: u64,
        reply: Sender<Exported>,
    },
    /// Loop `loop_id` read its fence: every publish it accepted is ahead.
    Fenced { loop_id: usize, attempt: u64 },
    /// The hand-over failed: this process goes on publishing.
    Resume { attempt: u64 },
}

/// The encoded state and what it holds, for the log and the metrics.
pub struct Exported {
    pub bytes: Vec<u8>,
    pub streams: usize,
    pub history: usize,
    pub last_values: usize,
    /// Time to collect and encode the state (publishing was on hold).
    pub took: Duration,
}

struct Wait {
    attempt: u64,
    fenced: Vec<bool>,
    reply: Sender<Exported>,
}

/// Held by the publisher; see the module docs.
pub struct Gate {
    loops: usize,
    waiting: Option<Wait>,
    /// The attempt whose state went out: nothing is published while set.
    frozen: Option<u64>,
    /// Publish batches that arrived while frozen (only the demo source sends
    /// any: the loops refuse publishes before they fence).
    dropped: u64,
}

impl Gate {
    pub fn new(loops: usize) -> Gate {
        Gate {
            loops,
            waiting: None,
            frozen: None,
            dropped: 0,
        }
    }

    /// The state went out: publishing now would number events the new process
    /// numbers too.
    pub fn frozen(&self) -> bool {
        self.frozen.is_some()
    }

    pub fn drop_publish(&mut self) {
        if self.dropped == 0 {
            log::warn!(
                "hand-over: a publish reached the publisher after the state export; dropped"
            );
        }
        self.dropped += 1;
    }

    pub fn on(&mut self, msg: HandoverMsg, streams: &Streams) {
        match msg {
            HandoverMsg::Begin { attempt, reply } => {
                self.waiting = Some(Wait {
                    attempt,
                    fenced: vec![false; self.loops],
                    reply,
                });
            }
            HandoverMsg::Fenced { loop_id, attempt } => {
                if let Some(w) = self.waiting.as_mut().filter(|w| w.attempt == attempt) {
                    if let Some(f) = w.fenced.get_mut(loop_id) {
                        *f = true;
                    }
                }
            }
            HandoverMsg::Resume { attempt } => {
                if self.waiting.as_ref().is_some_and(|w| w.attempt == attempt) {
                    self.waiting = None;
                }
                if self.frozen == Some(attempt) {
                    self.frozen = None;
                    if self.dropped > 0 {
                        log::warn!(
                            "hand-over: {} publish batch(es) dropped while the state was out",
                            self.dropped
                        );
                        self.dropped = 0;
                    }
                }
            }
        }
        if self
            .waiting
            .as_ref()
            .is_some_and(|w| w.fenced.iter().all(|f| *f))
        {
            if let Some(w) = self.waiting.take() {
                self.frozen = Some(w.attempt);
                let _ = w.reply.try_send(export(streams));
            }
        }
    }
}

fn export(streams: &Streams) -> Exported {
    let t0 = Instant::now();
    let state = streams.export();
    let (n, h, l) = (
        state.streams.len(),
        state.history.len(),
        state.last_values.len(),
    );
    let bytes = transfer::encode(&state);
    Exported {
        bytes,
        streams: n,
        history: h,
        last_values: l,
        took: t0.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::streams::Limits;

    fn streams() -> Streams {
        Streams::new(
            "e",
            2,
            &Limits {
                history_size: 10,
                history_max_bytes: 1 << 20,
                last_values: 0,
                last_values_max_bytes: 0,
            },
        )
    }

    #[test]
    fn exports_only_after_every_fence_of_the_attempt() {
        let s = streams();
        let mut g = Gate::new(2);
        let (tx, rx) = crossbeam_channel::bounded(1);
        g.on(
            HandoverMsg::Begin {
                attempt: 7,
                reply: tx,
            },
            &s,
        );
        g.on(
            HandoverMsg::Fenced {
                loop_id: 0,
                attempt: 7,
            },
            &s,
        );
        // A stale fence of an earlier attempt counts for nothing.
        g.on(
            HandoverMsg::Fenced {
                loop_id: 1,
                attempt: 6,
            },
            &s,
        );
        assert!(rx.try_recv().is_err());
        assert!(!g.frozen());
        g.on(
            HandoverMsg::Fenced {
                loop_id: 1,
                attempt: 7,
            },
            &s,
        );
        let e = rx.try_recv().expect("exported");
        assert_eq!(e.streams, 0);
        assert!(g.frozen());
        g.on(HandoverMsg::Resume { attempt: 6 }, &s);
        assert!(g.frozen());
        g.on(HandoverMsg::Resume { attempt: 7 }, &s);
        assert!(!g.frozen());
    }

    #[test]
    fn a_cancelled_wait_exports_nothing() {
        let s = streams();
        let mut g = Gate::new(1);
        let (tx, rx) = crossbeam_channel::bounded(1);
        g.on(
            HandoverMsg::Begin {
                attempt: 1,
                reply: tx,
            },
            &s,
        );
        g.on(HandoverMsg::Resume { attempt: 1 }, &s);
        g.on(
            HandoverMsg::Fenced {
                loop_id: 0,
                attempt: 1,
            },
            &s,
        );
        assert!(rx.try_recv().is_err());
        assert!(!g.frozen());
    }
}
