//! Listening sockets this process did not bind (docs/protocol.md §11):
//! systemd socket activation (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`)
//! and the hand-over from an old bistream process, which passes its sockets
//! the same way plus its channel as the last descriptor (with
//! `BISTREAM_HANDOVER=1` and no `LISTEN_PID`: the new process's pid is not
//! known before it starts).
//!
//! Taken by [`take`] first thing in `main`, before any thread starts: the
//! `listenfd` crate (which does the descriptor work, so this crate stays free
//! of `unsafe`) removes `LISTEN_FDS`/`LISTEN_PID` from the environment, which
//! is only sound while the process has one thread.

use std::os::unix::net::UnixStream;

use crate::server::listener::ListenSocket;

/// Where inherited sockets came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// systemd (or anything speaking its protocol) activated this process.
    Systemd,
    /// An old bistream process is handing over to this one.
    Handover,
}

/// What the environment handed this process.
pub struct Inherited {
    pub origin: Origin,
    /// The listening sockets, in descriptor order (fd 3 first).
    pub sockets: Vec<ListenSocket>,
    /// `LISTEN_FDNAMES`, one per socket when systemd gave them (for the log).
    pub names: Vec<String>,
    /// The hand-over channel ([`Origin::Handover`] only).
    pub channel: Option<UnixStream>,
}

#[derive(Debug, thiserror::Error)]
pub enum InheritError {
    #[error("LISTEN_FDS={0:?} is not a count of descriptors")]
    BadCount(String),
    #[error(
        "BISTREAM_HANDOVER is set without LISTEN_FDS: it is for bistream's own hand-over only"
    )]
    MarkerWithoutFds,
    #[error("BISTREAM_HANDOVER={0:?}: the only value is 1")]
    BadMarker(String),
    #[error("inherited descriptor {fd} is not a listening TCP or Unix stream socket: {why}")]
    NotAListener { fd: i32, why: String },
    #[error(
        "the hand-over channel (descriptor {fd}) is missing or not a Unix stream socket: {why}"
    )]
    NoChannel { fd: i32, why: String },
    #[error("LISTEN_FDS names no listening socket")]
    Empty,
}

/// The first inherited descriptor (`SD_LISTEN_FDS_START`).
const FIRST_FD: i32 = 3;

/// Takes the sockets named by the environment. `Ok(None)`: nothing was
/// inherited (or it was meant for another process: `LISTEN_PID` names
/// another pid, which is logged), so `--listen` is bound as usual.
pub fn take() -> Result<Option<Inherited>, InheritError> {
    let marker = std::env::var("BISTREAM_HANDOVER").ok();
    let Some(count) = std::env::var("LISTEN_FDS").ok() else {
        if marker.is_some() {
            return Err(InheritError::MarkerWithoutFds);
        }
        return Ok(None);
    };
    let handover = match marker.as_deref() {
        None => false,
        Some("1") => true,
        Some(other) => return Err(InheritError::BadMarker(other.to_string())),
    };
    let n: usize = count
        .trim()
        .parse()
        .map_err(|_| InheritError::BadCount(count.clone()))?;
    if let Ok(pid) = std::env::var("LISTEN_PID") {
        if !pid.is_empty() && pid.trim() != std::process::id().to_string() {
            log::info!(
                "LISTEN_FDS is meant for pid {pid}, not this process ({}): binding --listen",
                std::process::id()
            );
            // listenfd clears the variables either way.
            let _ = listenfd::ListenFd::from_env();
            return Ok(None);
        }
    }
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|v| v.split(':').map(str::to_string).collect())
        .unwrap_or_default();
    let mut fds = listenfd::ListenFd::from_env();
    let mut channel = None;
    let listeners = if handover {
        let last = n.saturating_sub(1);
        let fd = FIRST_FD + last as i32;
        let c = fds
            .take_custom::<UnixStream>(last, libc::AF_UNIX, libc::SOCK_STREAM, "unix stream")
            .map_err(|e| InheritError::NoChannel {
                fd,
                why: e.to_string(),
            })?
            .ok_or(InheritError::NoChannel {
                fd,
                why: "not passed".into(),
            })?;
        channel = Some(c);
        last
    } else {
        n
    };
    let mut sockets = Vec::with_capacity(listeners);
    for i in 0..listeners {
        sockets.push(take_listener(&mut fds, i)?);
    }
    if sockets.is_empty() {
        return Err(InheritError::Empty);
    }
    Ok(Some(Inherited {
        origin: if handover {
            Origin::Handover
        } else {
            Origin::Systemd
        },
        sockets,
        names: if handover { Vec::new() } else { names },
        channel,
    }))
}

fn take_listener(fds: &mut listenfd::ListenFd, i: usize) -> Result<ListenSocket, InheritError> {
    let fd = FIRST_FD + i as i32;
    let bad = |why: String| InheritError::NotAListener { fd, why };
    let socket = match fds.take_tcp_listener(i) {
        Ok(Some(l)) => ListenSocket::Tcp(l),
        Ok(None) => return Err(bad("not passed".into())),
        Err(tcp) => match fds.take_unix_listener(i) {
            Ok(Some(l)) => ListenSocket::Unix(l),
            Ok(None) => return Err(bad("not passed".into())),
            Err(unix) => return Err(bad(format!("{tcp}; {unix}"))),
        },
    };
    // A socket systemd passes with `Accept=yes` is a connection, not a listener.
    let listening = match &socket {
        ListenSocket::Tcp(l) => socket2::SockRef::from(l).is_listener(),
        ListenSocket::Unix(l) => socket2::SockRef::from(l).is_listener(),
    };
    match listening {
        Ok(true) => {}
        Ok(false) => return Err(bad("it is not listening (use Accept=no)".into())),
        Err(e) => return Err(bad(e.to_string())),
    }
    // systemd's sockets are blocking; the loops need them not to be.
    let nb = match &socket {
        ListenSocket::Tcp(l) => l.set_nonblocking(true),
        ListenSocket::Unix(l) => l.set_nonblocking(true),
    };
    nb.map_err(|e| bad(e.to_string()))?;
    Ok(socket)
}
