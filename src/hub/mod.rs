//! Ordering and fan-out: the publisher thread, stream state and history, the
//! encode-once event frame, and each loop's subscription index.

pub mod event;
pub mod publisher;
pub mod streams;
pub mod subscriptions;
