//! A loop's index from stream to the connections that receive it.
//!
//! Each connection remembers its position in its stream's list, so leaving is
//! O(1) (swap-remove) even when ten thousand clients of one stream go at once.

use std::collections::HashMap;

use crate::hub::event::StreamId;

/// A connection as the loop names it: slab key plus generation, so that a
/// message for a closed connection never reaches the next tenant of the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnRef {
    pub key: u32,
    pub gen: u32,
}

#[derive(Debug, Default)]
pub struct Subscriptions {
    streams: HashMap<StreamId, Vec<ConnRef>>,
}

impl Subscriptions {
    /// Adds `conn`; returns its position, to be handed back to [`Self::remove`].
    pub fn add(&mut self, stream: StreamId, conn: ConnRef) -> u32 {
        let list = self.streams.entry(stream).or_default();
        list.push(conn);
        (list.len() - 1) as u32
    }

    /// Removes the connection at `pos`. Returns the connection that moved into
    /// `pos`, whose remembered position the caller must update.
    pub fn remove(&mut self, stream: StreamId, pos: u32) -> Option<ConnRef> {
        let list = self.streams.get_mut(&stream)?;
        let pos = pos as usize;
        if pos >= list.len() {
            return None;
        }
        list.swap_remove(pos);
        let moved = list.get(pos).copied();
        if list.is_empty() {
            self.streams.remove(&stream);
        }
        moved
    }

    pub fn get(&self, stream: StreamId) -> &[ConnRef] {
        self.streams.get(&stream).map_or(&[], Vec::as_slice)
    }

    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(key: u32) -> ConnRef {
        ConnRef { key, gen: 1 }
    }

    #[test]
    fn swap_remove_reports_the_moved_connection() {
        let mut s = Subscriptions::default();
        assert_eq!(s.add(7, c(1)), 0);
        assert_eq!(s.add(7, c(2)), 1);
        assert_eq!(s.add(7, c(3)), 2);
        assert_eq!(s.remove(7, 0), Some(c(3)));
        assert_eq!(s.get(7), &[c(3), c(2)]);
        assert_eq!(s.remove(7, 1), None);
        assert_eq!(s.remove(7, 0), None);
        assert_eq!(s.stream_count(), 0);
        assert_eq!(s.get(7), &[]);
    }
}
