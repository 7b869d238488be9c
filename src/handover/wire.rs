//! The hand-over channel between the old and the new process: a socket pair,
//! one end inherited by the new process (docs/protocol.md §11). Messages are a
//! type byte, a `u64` length (little-endian) and that many bytes:
//!
//! ```text
//!  new → old   Hello { pid }         configuration valid, listeners taken
//!  old → new   State(bytes)          every loop fenced; hub::transfer state
//!              NoState               nothing to carry (an engine that keeps
//!                                    its state outside the process)
//!  new → old   Prepared              state imported, server built, not accepting
//!              Failed(why)           could not; the new process exits
//!  old → new   Commit { flags }      the old process stops accepting now; the
//!                                    new one starts its loops
//! ```
//!
//! Either side closing the socket (or exiting) before `Commit` has gone out
//! aborts the hand-over: the old process resumes, the new one exits. The old
//! process never resumes once it has sent `Commit`, and the new one never
//! serves before it has read it, so the two never take publishes at once.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Instant;

const HELLO: u8 = 1;
const STATE: u8 = 2;
const NO_STATE: u8 = 3;
const PREPARED: u8 = 4;
const FAILED: u8 = 5;
const COMMIT: u8 = 6;

/// `Commit` flag: the Unix socket files are this process's to remove at exit
/// (bound by bistream, not by systemd).
pub const COMMIT_OWNS_SOCKET_FILES: u8 = 1;

/// The longest `Failed` reason kept.
const MAX_REASON: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    Hello { pid: u32 },
    State(Vec<u8>),
    NoState,
    Prepared,
    Failed(String),
    Commit { flags: u8 },
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("the other process closed the hand-over channel")]
    Closed,
    #[error("timed out")]
    Timeout,
    #[error("message of {0} bytes is past the limit")]
    TooLarge(u64),
    #[error("unknown message type {0}")]
    Unknown(u8),
    #[error("malformed {0} message")]
    Malformed(&'static str),
    #[error(transparent)]
    Io(io::Error),
}

impl Msg {
    pub fn name(&self) -> &'static str {
        match self {
            Msg::Hello { .. } => "Hello",
            Msg::State(_) => "State",
            Msg::NoState => "NoState",
            Msg::Prepared => "Prepared",
            Msg::Failed(_) => "Failed",
            Msg::Commit { .. } => "Commit",
        }
    }

    fn parts(&self) -> (u8, std::borrow::Cow<'_, [u8]>) {
        use std::borrow::Cow;
        match self {
            Msg::Hello { pid } => (HELLO, Cow::Owned(pid.to_le_bytes().to_vec())),
            Msg::State(b) => (STATE, Cow::Borrowed(b)),
            Msg::NoState => (NO_STATE, Cow::Borrowed(&[])),
            Msg::Prepared => (PREPARED, Cow::Borrowed(&[])),
            Msg::Failed(why) => {
                let n = why.len().min(MAX_REASON);
                (FAILED, Cow::Borrowed(&why.as_bytes()[..n]))
            }
            Msg::Commit { flags } => (COMMIT, Cow::Owned(vec![*flags])),
        }
    }

    /// The message as bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, body) = self.parts();
        let mut out = Vec::with_capacity(9 + body.len());
        out.push(kind);
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    fn decode(kind: u8, body: Vec<u8>) -> Result<Msg, WireError> {
        Ok(match kind {
            HELLO => {
                let b: [u8; 4] = body
                    .as_slice()
                    .try_into()
                    .map_err(|_| WireError::Malformed("Hello"))?;
                Msg::Hello {
                    pid: u32::from_le_bytes(b),
                }
            }
            STATE => Msg::State(body),
            NO_STATE if body.is_empty() => Msg::NoState,
            PREPARED if body.is_empty() => Msg::Prepared,
            FAILED => Msg::Failed(String::from_utf8_lossy(&body).into_owned()),
            COMMIT if body.len() == 1 => Msg::Commit { flags: body[0] },
            NO_STATE => return Err(WireError::Malformed("NoState")),
            PREPARED => return Err(WireError::Malformed("Prepared")),
            COMMIT => return Err(WireError::Malformed("Commit")),
            k => return Err(WireError::Unknown(k)),
        })
    }
}

fn left(deadline: Instant) -> Result<std::time::Duration, WireError> {
    let d = deadline.saturating_duration_since(Instant::now());
    if d.is_zero() {
        return Err(WireError::Timeout);
    }
    Ok(d)
}

fn io_err(e: io::Error) -> WireError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => WireError::Timeout,
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionReset => WireError::Closed,
        _ => WireError::Io(e),
    }
}

/// Reads exactly `buf.len()` bytes before `deadline`.
fn read_exact(s: &mut UnixStream, buf: &mut [u8], deadline: Instant) -> Result<(), WireError> {
    let mut at = 0;
    while at < buf.len() {
        s.set_read_timeout(Some(left(deadline)?)).map_err(io_err)?;
        match s.read(&mut buf[at..]) {
            Ok(0) => return Err(WireError::Closed),
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(e)),
        }
    }
    Ok(())
}

/// Reads one message before `deadline`; a body over `max` bytes is refused
/// before it is read. The body is read as it arrives, never reserved whole
/// from the length field.
pub fn read(s: &mut UnixStream, deadline: Instant, max: u64) -> Result<Msg, WireError> {
    let mut head = [0u8; 9];
    read_exact(s, &mut head, deadline)?;
    let mut len = [0u8; 8];
    len.copy_from_slice(&head[1..]);
    let len = u64::from_le_bytes(len);
    if len > max {
        return Err(WireError::TooLarge(len));
    }
    const CHUNK: usize = 1 << 20;
    let len = usize::try_from(len).map_err(|_| WireError::TooLarge(len))?;
    let mut body = Vec::with_capacity(len.min(CHUNK));
    while body.len() < len {
        let at = body.len();
        let n = (len - at).min(CHUNK);
        body.resize(at + n, 0);
        read_exact(s, &mut body[at..], deadline)?;
    }
    Msg::decode(head[0], body)
}

/// Writes one message before `deadline`.
pub fn write(s: &mut UnixStream, msg: &Msg, deadline: Instant) -> Result<(), WireError> {
    let bytes = msg.encode();
    let mut at = 0;
    while at < bytes.len() {
        s.set_write_timeout(Some(left(deadline)?)).map_err(io_err)?;
        match s.write(&bytes[at..]) {
            Ok(0) => return Err(WireError::Closed),
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[test]
    fn every_message_round_trips_over_a_socket_pair() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let big = vec![7u8; 3 << 20];
        let msgs = vec![
            Msg::Hello { pid: 4242 },
            Msg::State(big),
            Msg::NoState,
            Msg::Prepared,
            Msg::Failed("state is corrupt: x".into()),
            Msg::Commit {
                flags: COMMIT_OWNS_SOCKET_FILES,
            },
        ];
        let sent = msgs.clone();
        let writer = std::thread::spawn(move || {
            for m in &sent {
                write(&mut a, m, soon()).unwrap();
            }
        });
        for m in msgs {
            assert_eq!(read(&mut b, soon(), 4 << 20).unwrap(), m);
        }
        writer.join().unwrap();
        assert!(matches!(read(&mut b, soon(), 1), Err(WireError::Closed)));
    }

    #[test]
    fn bad_input_is_refused() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        write(&mut a, &Msg::State(vec![0; 100]), soon()).unwrap();
        assert!(matches!(
            read(&mut b, soon(), 99),
            Err(WireError::TooLarge(100))
        ));
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.write_all(&[99, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        assert!(matches!(
            read(&mut b, soon(), 10),
            Err(WireError::Unknown(99))
        ));
        a.write_all(&[HELLO, 1, 0, 0, 0, 0, 0, 0, 0, 1]).unwrap();
        assert!(matches!(
            read(&mut b, soon(), 10),
            Err(WireError::Malformed("Hello"))
        ));
        // A truncated body: the writer goes away mid-message.
        a.write_all(&[STATE, 10, 0, 0, 0, 0, 0, 0, 0, 1, 2])
            .unwrap();
        drop(a);
        assert!(matches!(read(&mut b, soon(), 10), Err(WireError::Closed)));
    }

    #[test]
    fn a_silent_peer_times_out() {
        let (_a, mut b) = UnixStream::pair().unwrap();
        let t0 = Instant::now();
        let e = read(&mut b, Instant::now() + Duration::from_millis(100), 10);
        assert!(matches!(e, Err(WireError::Timeout)), "{e:?}");
        assert!(t0.elapsed() >= Duration::from_millis(90));
    }
}
