//! What a phase handler may touch besides its connection: the loop's view of
//! the publisher, its subscription index, its metrics and its clock. Phase
//! modules (`http_conn`, `ws_conn`, `close`) depend on this and on
//! `connection`, never on each other or on the loop.

use crate::clock::Tick;
use std::collections::VecDeque;
use std::sync::Arc;

use crossbeam_channel::TrySendError;

use crate::hub::channels::{PublisherHandle, ToPublisher};
use crate::hub::subscriptions::{ConnRef, Subscriptions};
use crate::metrics::LoopMetrics;
use crate::server::connection::{Connection, WsKind, WsState};
use crate::server::Shared;

pub(crate) struct Ctx {
    /// This loop's index: how the publisher addresses it.
    pub(crate) id: usize,
    pub(crate) shared: Arc<Shared>,
    pub(crate) publisher: PublisherHandle,
    /// Control messages that found the publisher's inbox full; retried each
    /// iteration, in order, so an unsubscribe is never lost.
    pending_ctrl: VecDeque<ToPublisher>,
    /// Which of this loop's connections receive which stream.
    pub(crate) subs: Subscriptions,
    /// Hot-path counters, folded into the shared metrics once per iteration.
    pub(crate) lm: LoopMetrics,
    /// Connections with bytes queued this iteration, flushed once at its end.
    pub(crate) dirty: Vec<usize>,
    /// The time of this wake-up (one clock read per iteration).
    pub(crate) now: Tick,
    conn_counter: u64,
    /// The drain deadline, once draining.
    pub(crate) draining: Option<Tick>,
}

impl Ctx {
    pub(crate) fn new(id: usize, shared: Arc<Shared>, publisher: PublisherHandle) -> Ctx {
        let lm = LoopMetrics::new(&shared.metrics);
        Ctx {
            id,
            shared,
            publisher,
            pending_ctrl: VecDeque::new(),
            subs: Subscriptions::default(),
            lm,
            dirty: Vec::new(),
            now: Tick::now(),
            conn_counter: 0,
            draining: None,
        }
    }

    /// Sends a control message to the publisher, never blocking.
    pub(crate) fn send_ctrl(&mut self, msg: ToPublisher) {
        if !self.pending_ctrl.is_empty() {
            self.pending_ctrl.push_back(msg);
            return;
        }
        match self.publisher.try_send(msg) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(m)) => self.pending_ctrl.push_back(m),
        }
    }

    /// A hand-over's fence (`hub::export`): publishes are refused from now on
    /// (the flag was set before the fence was sent), and every one this loop
    /// accepted is ahead of this message in the publisher's inbox.
    pub(crate) fn fence(&mut self, attempt: u64) {
        self.send_ctrl(ToPublisher::Handover(
            crate::hub::export::HandoverMsg::Fenced {
                loop_id: self.id,
                attempt,
            },
        ));
    }

    /// Retries what [`Self::send_ctrl`] could not send.
    pub(crate) fn retry_ctrl(&mut self) {
        while let Some(msg) = self.pending_ctrl.pop_front() {
            match self.publisher.try_send(msg) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => {}
                Err(TrySendError::Full(m)) => {
                    self.pending_ctrl.push_front(m);
                    return;
                }
            }
        }
    }

    pub(crate) fn has_pending_ctrl(&self) -> bool {
        !self.pending_ctrl.is_empty()
    }

    pub(crate) fn mark_dirty(&mut self, key: usize, conn: &mut Connection) {
        if !conn.dirty {
            conn.dirty = true;
            self.dirty.push(key);
        }
    }

    /// The connections marked dirty since the last call.
    pub(crate) fn take_dirty(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.dirty)
    }

    pub(crate) fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// A `connection_id` number unique within the process: loop id and counter.
    pub(crate) fn next_conn_id(&mut self) -> u64 {
        self.conn_counter += 1;
        ((self.id as u64) << 48) | self.conn_counter
    }

    /// An open WebSocket connection stops being one (closing or removed):
    /// leave its stream, tell the publisher, and update the gauge.
    pub(crate) fn leave_open(&mut self, key: usize, gen: u32, ws: &WsState) {
        if let WsKind::Stream { stream, .. } = &ws.kind {
            let conn = ConnRef {
                key: key as u32,
                gen,
            };
            if self.subs.remove(*stream, conn) {
                self.send_ctrl(ToPublisher::Unsubscribe {
                    loop_id: self.id,
                    stream: *stream,
                });
            }
        }
        self.shared
            .metrics
            .connections
            .with_label_values(&[ws.kind.metric_label()])
            .dec();
    }
}
