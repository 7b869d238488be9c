//! Ordering and fan-out: the publisher thread, stream state, history and last
//! values, the encode-once event frame, and each loop's subscription index.

pub mod channels;
pub mod event;
pub mod export;
pub mod last_values;
pub mod publisher;
pub mod streams;
pub mod subscriptions;
pub mod transfer;
