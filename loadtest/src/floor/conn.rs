//! One floor connection: its state and its bounded outbound queue of shared frames.

use mio::net::TcpStream;
use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::sync::Arc;

/// Most slices handed to one `writev`.
pub const MAX_IOV: usize = 64;

/// Bytes queued for a connection: a shared event frame or bytes of its own.
pub enum Chunk {
    Shared(Arc<[u8]>),
    Own(Vec<u8>),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Shared(a) => a,
            Chunk::Own(v) => v,
        }
    }
}

/// Where a connection is in its life.
pub enum State {
    /// Reading HTTP requests (publishers, health checks, upgrades not yet complete).
    Http,
    /// An upgraded subscriber of stream `stream`, registered at `subs[stream][pos]`.
    Ws {
        stream: u32,
        /// `last_seq` it was told; deliveries at or below it are not sent.
        start_seq: u64,
        pos: usize,
    },
}

/// A connection of a floor loop.
pub struct Conn {
    pub sock: TcpStream,
    pub state: State,
    /// Received bytes not yet consumed.
    pub inbuf: Vec<u8>,
    out: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    front_off: usize,
    /// Bytes queued and not written.
    pub out_bytes: usize,
    /// Whether the connection is in the loop's dirty list.
    pub dirty: bool,
    /// Close once the queue is flushed.
    pub closing: bool,
}

/// Result of a flush.
#[derive(Debug, PartialEq, Eq)]
pub enum Flush {
    /// Everything written.
    Done,
    /// The kernel buffer is full; wait for writable.
    Blocked,
}

impl Conn {
    pub fn new(sock: TcpStream) -> Conn {
        Conn {
            sock,
            state: State::Http,
            inbuf: Vec::new(),
            out: VecDeque::new(),
            front_off: 0,
            out_bytes: 0,
            dirty: false,
            closing: false,
        }
    }

    pub fn push(&mut self, chunk: Chunk) {
        self.out_bytes += chunk.bytes().len();
        self.out.push_back(chunk);
    }

    /// Whether no frame is half written (a close frame can be slipped in).
    pub fn at_frame_boundary(&self) -> bool {
        self.front_off == 0
    }

    /// Writes as much as the kernel takes, up to `MAX_IOV` chunks per call.
    pub fn flush(&mut self) -> io::Result<Flush> {
        while !self.out.is_empty() {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let mut n = 0;
            for (i, c) in self.out.iter().take(MAX_IOV).enumerate() {
                let b = c.bytes();
                iov[i] = IoSlice::new(if i == 0 { &b[self.front_off..] } else { b });
                n = i + 1;
            }
            match self.sock.write_vectored(&iov[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(mut written) => {
                    self.out_bytes -= written;
                    while written > 0 {
                        let Some(front) = self.out.front() else { break };
                        let left = front.bytes().len() - self.front_off;
                        if written >= left {
                            written -= left;
                            self.out.pop_front();
                            self.front_off = 0;
                        } else {
                            self.front_off += written;
                            written = 0;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flush::Blocked),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Flush::Done)
    }
}
