//! Binding: one SO_REUSEPORT TCP listener per event loop (the kernel spreads
//! new connections over the loops; no hand-off between threads), and for a Unix
//! socket one listener shared by every loop (`SO_REUSEPORT` does not balance
//! Unix sockets; each loop polls a duplicate of the same descriptor).

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

/// What was bound: per loop its listeners, and the real addresses (port 0 resolved).
pub(crate) struct Bound {
    pub(crate) per_loop: Vec<Vec<Listener>>,
    pub(crate) addrs: Vec<ListenAddr>,
    pub(crate) unix_paths: Vec<PathBuf>,
}

pub(crate) fn bind_all(
    addrs: &[ListenAddr],
    loops: usize,
    unix_mode: Option<u32>,
) -> Result<Bound, BindError> {
    let mut per_loop: Vec<Vec<Listener>> = (0..loops).map(|_| Vec::new()).collect();
    let mut bound = Vec::new();
    let mut unix_paths = Vec::new();
    for a in addrs {
        match a {
            ListenAddr::Tcp(addr) => {
                let io_err = |source| BindError::Io {
                    addr: addr.to_string(),
                    source,
                };
                let first = tcp(*addr).map_err(io_err)?;
                // Port 0: the other loops join the port the kernel picked.
                let actual = first.local_addr().map_err(io_err)?;
                bound.push(ListenAddr::Tcp(actual));
                per_loop[0].push(Listener::Tcp(mio::net::TcpListener::from_std(first)));
                for l in per_loop.iter_mut().skip(1) {
                    let s = tcp(actual).map_err(io_err)?;
                    l.push(Listener::Tcp(mio::net::TcpListener::from_std(s)));
                }
            }
            ListenAddr::Unix(path) => {
                let l = unix(path, unix_mode)?;
                for pl in per_loop.iter_mut() {
                    let dup = l.try_clone().map_err(|source| BindError::Io {
                        addr: a.to_string(),
                        source,
                    })?;
                    pl.push(Listener::Unix(mio::net::UnixListener::from_std(dup)));
                }
                bound.push(a.clone());
                unix_paths.push(path.clone());
            }
        }
    }
    Ok(Bound {
        per_loop,
        addrs: bound,
        unix_paths,
    })
}
