//! A loop's index from stream to the connections that receive it.
//!
//! The index keeps its own back-references (each slab key's position in its
//! stream's list), so leaving is O(1) (swap-remove) even when ten thousand
//! clients of one stream go at once, and no caller has to track positions.

use std::collections::HashMap;

use crate::hub::event::StreamId;

/// A connection as the loop names it: slab key plus generation, so that a
/// message for a closed connection never reaches the next tenant of the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnRef {
    pub key: u32,
    pub gen: u32,
}

/// No position: the slab key is not in any list.
const NONE: u32 = u32::MAX;

#[derive(Debug, Default)]
pub struct Subscriptions {
    streams: HashMap<StreamId, Vec<ConnRef>>,
    /// Position of each slab key in its stream's list; indexed by key, so it
    /// grows with the slab and costs four bytes per slot.
    pos: Vec<u32>,
}

impl Subscriptions {
    /// Adds `conn` to `stream`'s list.
    pub fn add(&mut self, stream: StreamId, conn: ConnRef) {
        let list = self.streams.entry(stream).or_default();
        list.push(conn);
        let k = conn.key as usize;
        if self.pos.len() <= k {
            self.pos.resize(k + 1, NONE);
        }
        self.pos[k] = (list.len() - 1) as u32;
    }

    /// Removes `conn` from `stream`'s list; false when it was not there.
    pub fn remove(&mut self, stream: StreamId, conn: ConnRef) -> bool {
        let k = conn.key as usize;
        let Some(&p) = self.pos.get(k) else {
            return false;
        };
        let Some(list) = self.streams.get_mut(&stream) else {
            return false;
        };
        let p = p as usize;
        if list.get(p) != Some(&conn) {
            return false;
        }
        list.swap_remove(p);
        self.pos[k] = NONE;
        if let Some(moved) = list.get(p) {
            self.pos[moved.key as usize] = p as u32;
        }
        if list.is_empty() {
            self.streams.remove(&stream);
        }
        true
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
    fn removal_keeps_positions_right_without_the_caller() {
        let mut s = Subscriptions::default();
        s.add(7, c(1));
        s.add(7, c(2));
        s.add(7, c(3));
        s.add(8, c(4));
        assert!(s.remove(7, c(1)));
        assert_eq!(s.get(7), &[c(3), c(2)]);
        // c(3) moved into slot 0: removing it by name still works.
        assert!(s.remove(7, c(3)));
        assert_eq!(s.get(7), &[c(2)]);
        assert!(!s.remove(7, c(3)));
        // A stale generation of the same slot is not removed.
        assert!(!s.remove(7, ConnRef { key: 2, gen: 9 }));
        assert!(s.remove(7, c(2)));
        assert_eq!(s.stream_count(), 1);
        assert_eq!(s.get(7), &[]);
        assert!(s.remove(8, c(4)));
        assert_eq!(s.stream_count(), 0);
    }

    #[test]
    fn ten_thousand_leave_in_any_order() {
        let mut s = Subscriptions::default();
        for k in 0..10_000 {
            s.add(1, c(k));
        }
        for k in (0..10_000).rev().step_by(2).chain((0..10_000).step_by(2)) {
            assert!(s.remove(1, c(k)), "{k}");
        }
        assert_eq!(s.stream_count(), 0);
    }
}
