//! Commands for Redis encoded straight into one buffer that outlives the
//! batch (RESP: an array of bulk strings per command). Used for the publish
//! transaction, a few MB per batch at full load: the `redis` crate's `Cmd`
//! and `Pipeline` copy each argument twice into buffers made afresh for
//! every batch, and at that size each batch's new buffers were page faults
//! (a tenth of the command thread's time, `perf`). The crate still sends the
//! bytes and reads the replies (`ConnectionLike::req_packed_commands`).

use redis::{ConnectionLike, RedisResult, Value};

/// What the buffer may keep between batches: a larger one (an unusually big
/// batch) is given back.
const KEEP: usize = 8 << 20;

/// Commands waiting to be sent, in order.
#[derive(Default)]
pub struct Commands {
    buf: Vec<u8>,
    count: usize,
    /// Arguments the command being written still owes.
    owed: usize,
}

impl Commands {
    /// Starts a command of `args` arguments, its name included.
    pub fn command(&mut self, args: usize) -> &mut Self {
        debug_assert_eq!(self.owed, 0, "the previous command is short of arguments");
        self.buf.push(b'*');
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(args).as_bytes());
        self.buf.extend_from_slice(b"\r\n");
        self.count += 1;
        self.owed = args;
        self
    }

    pub fn arg(&mut self, b: &[u8]) -> &mut Self {
        debug_assert!(self.owed > 0, "more arguments than the command said");
        self.owed = self.owed.saturating_sub(1);
        self.buf.push(b'$');
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(b.len()).as_bytes());
        self.buf.extend_from_slice(b"\r\n");
        self.buf.extend_from_slice(b);
        self.buf.extend_from_slice(b"\r\n");
        self
    }

    /// An integer argument, as Redis reads numbers: decimal text.
    pub fn int(&mut self, n: u64) -> &mut Self {
        self.arg(itoa::Buffer::new().format(n).as_bytes())
    }

    /// How many commands are waiting.
    pub fn len(&self) -> usize {
        self.count
    }

    /// The encoded commands, as sent.
    pub fn bytes(&self) -> &[u8] {
        debug_assert_eq!(self.owed, 0, "the last command is short of arguments");
        &self.buf
    }

    /// Sends every command and reads one reply each (an error reply in place,
    /// as `Value::ServerError`); `Err` when the link failed. Empties the list.
    pub fn send(&mut self, con: &mut impl ConnectionLike) -> RedisResult<Vec<Value>> {
        let replies = con.req_packed_commands(self.bytes(), 0, self.count);
        self.clear();
        replies
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        if self.buf.capacity() > KEEP {
            self.buf.shrink_to(KEEP);
        }
        self.count = 0;
        self.owed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_encode_as_arrays_of_bulk_strings() {
        let mut c = Commands::default();
        c.command(3).arg(b"SET").arg(b"k").arg(b"a\r\nb");
        c.command(2).arg(b"INCRBY").int(42);
        assert_eq!(c.len(), 2);
        assert_eq!(
            c.bytes(),
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n*2\r\n$6\r\nINCRBY\r\n$2\r\n42\r\n"
        );
        c.clear();
        assert_eq!(c.len(), 0);
        assert_eq!(c.bytes(), b"");
    }
}
