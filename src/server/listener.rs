//! Binding: one SO_REUSEPORT TCP listener per event loop (the kernel spreads
//! new connections over the loops; no hand-off between threads), and for a Unix
//! socket one listener shared by every loop (`SO_REUSEPORT` does not balance
//! Unix sockets; each loop polls a duplicate of the same descriptor).
//!
//! Every distinct socket is also kept as a [`ListenSocket`] by the server, for
//! a hand-over (docs/protocol.md §11): the new process gets these very sockets,
//! so that what waits in their accept queues is not lost.

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use socket2::{Domain, Protocol, Socket as RawSocket, Type};

use crate::config::ListenAddr;
use crate::server::socket::Listener;

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot listen on {addr}: {source}")]
    Io { addr: String, source: io::Error },
    #[error("{0} is in use by a running server")]
    SocketInUse(PathBuf),
    #[error("{0} exists and is not a socket: refusing to replace it")]
    NotASocket(PathBuf),
}

const BACKLOG: i32 = 4096;

fn tcp(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let s = RawSocket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    Ok(s.into())
}

/// A socket file left by a crashed run is replaced; one a live server answers on is not.
fn unix(path: &Path, mode: Option<u32>) -> Result<std::os::unix::net::UnixListener, BindError> {
    let err = |source| BindError::Io {
        addr: format!("unix:{}", path.display()),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        // `connect` to a regular file also fails with ECONNREFUSED: never delete one.
        if !meta.file_type().is_socket() {
            return Err(BindError::NotASocket(path.to_path_buf()));
        }
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(BindError::SocketInUse(path.to_path_buf())),
            // Only "nobody listens" makes the file stale; a full backlog (EAGAIN)
            // or no permission (EACCES) may well be a live server.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path).map_err(err)?
            }
            Err(e) => return Err(err(e)),
        }
    }
    let l = std::os::unix::net::UnixListener::bind(path).map_err(err)?;
    if let Some(mode) = mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    }
    l.set_nonblocking(true).map_err(err)?;
    Ok(l)
}

/// One listening socket as the process holds it (not a loop's copy).
pub enum ListenSocket {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

impl ListenSocket {
    /// A loop's copy: the same socket under another descriptor.
    pub(crate) fn loop_copy(&self) -> io::Result<Listener> {
        Ok(match self {
            ListenSocket::Tcp(l) => Listener::Tcp(mio::net::TcpListener::from_std(l.try_clone()?)),
            ListenSocket::Unix(l) => {
                Listener::Unix(mio::net::UnixListener::from_std(l.try_clone()?))
            }
        })
    }

    /// The same socket under another descriptor, for a new process.
    pub fn duplicate(&self) -> io::Result<std::os::fd::OwnedFd> {
        Ok(match self {
            ListenSocket::Tcp(l) => l.try_clone()?.into(),
            ListenSocket::Unix(l) => l.try_clone()?.into(),
        })
    }

    /// The address it listens on; an unnamed or abstract Unix socket shows as
    /// `unix:@name` (or `unix:@`).
    pub fn addr(&self) -> io::Result<ListenAddr> {
        use std::os::linux::net::SocketAddrExt;
        Ok(match self {
            ListenSocket::Tcp(l) => ListenAddr::Tcp(l.local_addr()?),
            ListenSocket::Unix(l) => {
                let a = l.local_addr()?;
                match (a.as_pathname(), a.as_abstract_name()) {
                    (Some(p), _) => ListenAddr::Unix(p.to_path_buf()),
                    (None, Some(name)) => ListenAddr::Unix(PathBuf::from(format!(
                        "@{}",
                        String::from_utf8_lossy(name)
                    ))),
                    (None, None) => ListenAddr::Unix(PathBuf::from("@")),
                }
            }
        })
    }
}

/// What was bound: per loop its listeners, and the real addresses (port 0 resolved).
pub(crate) struct Bound {
    pub(crate) per_loop: Vec<Vec<Listener>>,
    pub(crate) addrs: Vec<ListenAddr>,
    pub(crate) unix_paths: Vec<PathBuf>,
    /// Each distinct socket once, in a stable order, for a hand-over.
    pub(crate) sockets: Vec<ListenSocket>,
}

pub(crate) fn bind_all(
    addrs: &[ListenAddr],
    loops: usize,
    unix_mode: Option<u32>,
) -> Result<Bound, BindError> {
    let mut per_loop: Vec<Vec<Listener>> = (0..loops).map(|_| Vec::new()).collect();
    let mut bound = Vec::new();
    let mut unix_paths = Vec::new();
    let mut sockets = Vec::new();
    for a in addrs {
        let io_err = |source| BindError::Io {
            addr: a.to_string(),
            source,
        };
        match a {
            ListenAddr::Tcp(addr) => {
                let first = tcp(*addr).map_err(io_err)?;
                // Port 0: the other loops join the port the kernel picked.
                let actual = first.local_addr().map_err(io_err)?;
                bound.push(ListenAddr::Tcp(actual));
                let first = ListenSocket::Tcp(first);
                per_loop[0].push(first.loop_copy().map_err(io_err)?);
                sockets.push(first);
                for l in per_loop.iter_mut().skip(1) {
                    let s = ListenSocket::Tcp(tcp(actual).map_err(io_err)?);
                    l.push(s.loop_copy().map_err(io_err)?);
                    sockets.push(s);
                }
            }
            ListenAddr::Unix(path) => {
                let l = ListenSocket::Unix(unix(path, unix_mode)?);
                for pl in per_loop.iter_mut() {
                    pl.push(l.loop_copy().map_err(io_err)?);
                }
                sockets.push(l);
                bound.push(a.clone());
                unix_paths.push(path.clone());
            }
        }
    }
    Ok(Bound {
        per_loop,
        addrs: bound,
        unix_paths,
        sockets,
    })
}

/// Inherited sockets (socket activation, or a hand-over) spread over `loops`:
/// the sockets of one address go round-robin over the loops, and a loop left
/// without one polls a copy of one, as with a Unix socket, so that every
/// socket is polled by some loop (an unpolled `SO_REUSEPORT` member would keep
/// the connections hashed to it waiting) and every loop takes its share.
pub(crate) fn assign(sockets: Vec<ListenSocket>, loops: usize) -> Result<Bound, BindError> {
    let mut per_loop: Vec<Vec<Listener>> = (0..loops).map(|_| Vec::new()).collect();
    let mut groups: Vec<(ListenAddr, Vec<usize>)> = Vec::new();
    for (i, s) in sockets.iter().enumerate() {
        let addr = s.addr().map_err(|source| BindError::Io {
            addr: format!("inherited socket {i}"),
            source,
        })?;
        match groups.iter_mut().find(|(a, _)| *a == addr) {
            Some((_, members)) => members.push(i),
            None => groups.push((addr, vec![i])),
        }
    }
    for (addr, members) in &groups {
        let io_err = |source| BindError::Io {
            addr: addr.to_string(),
            source,
        };
        for (j, &i) in members.iter().enumerate() {
            per_loop[j % loops].push(sockets[i].loop_copy().map_err(io_err)?);
        }
        for (l, pl) in per_loop.iter_mut().enumerate().skip(members.len()) {
            let i = members[l % members.len()];
            pl.push(sockets[i].loop_copy().map_err(io_err)?);
        }
    }
    Ok(Bound {
        per_loop,
        addrs: groups.into_iter().map(|(a, _)| a).collect(),
        unix_paths: Vec::new(),
        sockets,
    })
}
