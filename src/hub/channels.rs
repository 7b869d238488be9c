//! The messages between the event loops, the publisher and the engine's
//! threads, and the sending ends that carry them (`docs/architecture.md`,
//! "Channels"). Every channel is bounded.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;

use crossbeam_channel::{Sender, TrySendError};
use mio::Waker;

use crate::channel::Channel;
use crate::engine::EngineEvent;
use crate::http::publish::PublishEvent;
use crate::http::response::Refusal;
use crate::hub::event::{Delivery, StreamId};
use crate::hub::export::HandoverMsg;
use crate::hub::streams::HistEntry;
use crate::hub::subscriptions::ConnRef;

/// Messages to the publisher.
pub enum ToPublisher {
    Publish(Vec<PublishEvent>),
    Subscribe(SubscribeRequest),
    Unsubscribe {
        loop_id: usize,
        stream: StreamId,
    },
    /// What the Redis engine's threads report (`--engine redis`).
    Engine(Box<EngineEvent>),
    /// A hand-over's fence and export (docs/protocol.md §11, `hub::export`).
    Handover(HandoverMsg),
    Shutdown,
}

pub struct SubscribeRequest {
    pub loop_id: usize,
    pub conn: ConnRef,
    pub channel: Channel,
    pub location: Box<str>,
    pub since: Option<u64>,
    pub epoch: Option<String>,
    /// `snapshot=1`: send the stream's last values (docs/protocol.md §9).
    pub snapshot: bool,
}

/// Messages to an event loop.
pub enum ToLoop {
    Deliver(Vec<Delivery>),
    Subscribed(Box<SubscribeAck>),
    /// The Redis engine's answer to a publish request of this loop.
    Published {
        conn: ConnRef,
        result: Result<usize, Refusal>,
    },
    /// The stream's numbering could not be continued (its state in Redis was
    /// lost, or events were missed that history no longer holds): close its
    /// connections with 4010 so that their clients resume (§10).
    Resync(StreamId),
    /// Begin the graceful drain (SIGTERM/SIGINT).
    Drain,
    /// A hand-over's fence (`hub::export`): publishes are refused from now
    /// on; answer `HandoverMsg::Fenced` with this attempt.
    Fence(u64),
    /// The new process took over: stop accepting and close every client with
    /// 1012, at random instants over this spread (docs/protocol.md §11).
    Retire(std::time::Duration),
}

/// The publisher's answer to a subscription. Everything up to `last_seq` is in
/// `replay` (when recovery was asked for); every live event the loop receives
/// after this message has a greater seq. That is the whole seam: the channel
/// to the loop is FIFO and the publisher is the only writer of seq.
pub struct SubscribeAck {
    pub conn: ConnRef,
    pub stream: StreamId,
    /// The epoch of this stream's history, for `BI_CONNECTION_ESTABLISHED`.
    pub epoch: String,
    pub last_seq: u64,
    /// `Some` when the client sent `since`.
    pub recovery: Option<Recovery>,
    /// `Some` when a snapshot is due (asked for, and no complete recovery):
    /// the last values with seq ≤ `last_seq` that the replay does not carry,
    /// in ascending seq, as snapshot frames. The loop applies the filter.
    pub snapshot: Option<Vec<HistEntry>>,
}

pub struct Recovery {
    pub entries: Vec<HistEntry>,
    pub complete: bool,
}

/// The sending side of the publisher's inbox, for loops and the demo source.
/// Never blocks: a full inbox is the caller's 503 (or retry).
#[derive(Clone)]
pub struct PublisherHandle {
    tx: Sender<ToPublisher>,
    /// Set once the publisher thread exists, before any loop runs.
    thread: Arc<OnceLock<Thread>>,
}

impl PublisherHandle {
    pub fn new(tx: Sender<ToPublisher>) -> PublisherHandle {
        PublisherHandle {
            tx,
            thread: Arc::new(OnceLock::new()),
        }
    }

    pub fn set_thread(&self, t: Thread) {
        let _ = self.thread.set(t);
    }

    pub fn try_send(&self, msg: ToPublisher) -> Result<(), TrySendError<ToPublisher>> {
        self.tx.try_send(msg)?;
        self.wake();
        Ok(())
    }

    /// For the engine's own threads, which may wait: the publisher never
    /// waits on them (it only `try_send`s to them), so this cannot deadlock.
    pub fn send_blocking(&self, msg: ToPublisher) -> bool {
        if self.tx.send(msg).is_err() {
            return false;
        }
        self.wake();
        true
    }

    fn wake(&self) {
        if let Some(t) = self.thread.get() {
            // Cheap when the thread is awake: unpark only sets its token.
            t.unpark();
        }
    }
}

/// The sending side of one loop's inbox.
#[derive(Clone)]
pub struct LoopHandle {
    pub tx: Sender<ToLoop>,
    pub waker: Arc<Waker>,
    /// Set when a wake-up is pending, so a burst of sends costs one `write(2)`
    /// on the loop's eventfd rather than one per message.
    pub notified: Arc<AtomicBool>,
}

impl LoopHandle {
    /// Blocks while the loop's inbox is full (bounded); false once the loop is gone.
    pub fn send(&self, msg: ToLoop) -> bool {
        if self.tx.send(msg).is_err() {
            return false;
        }
        if !self.notified.swap(true, Ordering::AcqRel) {
            let _ = self.waker.wake();
        }
        true
    }
}
