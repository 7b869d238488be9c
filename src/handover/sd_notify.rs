//! systemd's readiness protocol (`sd_notify(3)`), the few lines bistream
//! needs: `READY=1` once it serves, and, when it hands over to a new process,
//! `MAINPID=<pid>` so that systemd follows the new process instead of
//! stopping the service when the old one exits (`Type=notify`,
//! docs/deploy.md). Without `NOTIFY_SOCKET` (not started by systemd) every
//! call does nothing.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends `state` (e.g. `"READY=1"`) to the service manager. `Ok(false)` when
/// there is none to tell.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let bytes = path.as_encoded_bytes();
    let addr = match bytes.split_first() {
        // An abstract socket, written with a leading `@`.
        Some((b'@', name)) => SocketAddr::from_abstract_name(name)?,
        Some((b'/', _)) => SocketAddr::from_pathname(&path)?,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "NOTIFY_SOCKET is neither a path nor @abstract",
            ))
        }
    };
    let sock = UnixDatagram::unbound()?;
    sock.send_to_addr(state.as_bytes(), &addr)?;
    Ok(true)
}

/// [`notify`], logging a failure instead of returning it: readiness reports
/// are best effort.
pub fn tell(state: &str) {
    match notify(state) {
        Ok(true) => log::debug!("told the service manager {state:?}"),
        Ok(false) => {}
        Err(e) => log::warn!("cannot notify the service manager ({state:?}): {e}"),
    }
}
