//! The server under test: `--url` parsing and the loopback-only safety rule.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use thiserror::Error;

/// Port of the contract's default listener (`127.0.0.1:8000`).
pub const DEFAULT_PORT: u16 = 8000;

/// A `--url` (or `floor --listen`) that cannot be used (usage error, exit 2).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("unsupported scheme in `{0}` (use ws://, http:// or HOST:PORT; TLS is not supported)")]
    Scheme(String),
    #[error("`{0}` has no host")]
    NoHost(String),
    #[error("`{0}`: bad port")]
    BadPort(String),
    #[error("cannot resolve `{0}`: {1}")]
    Resolve(String, String),
    #[error("`{host}` resolves to {addr}, which is not a loopback address; load tests only target this machine (pass --allow-remote to override)")]
    NotLoopback { host: String, addr: IpAddr },
}

/// A resolved target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Address every connection and the publisher connect to.
    pub addr: SocketAddr,
    /// `Host` header value (`127.0.0.1:8000`).
    pub host_header: String,
}

/// Splits `ws://host:port/anything`, `http://host:port`, or `host:port` into host and port.
pub fn split_url(url: &str) -> Result<(String, u16), TargetError> {
    let rest = if let Some((scheme, rest)) = url.split_once("://") {
        match scheme {
            "ws" | "http" => rest,
            _ => return Err(TargetError::Scheme(url.to_owned())),
        }
    } else {
        url
    };
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() {
        return Err(TargetError::NoHost(url.to_owned()));
    }
    // `[::1]:8000`, `[::1]`, `host:8000`, `host`.
    let (host, port) = if let Some(stripped) = authority.strip_prefix('[') {
        let (h, after) = stripped
            .split_once(']')
            .ok_or_else(|| TargetError::NoHost(url.to_owned()))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(TargetError::BadPort(url.to_owned())),
        };
        (h.to_owned(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (authority.to_owned(), None),
        }
    };
    if host.is_empty() {
        return Err(TargetError::NoHost(url.to_owned()));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| TargetError::BadPort(url.to_owned()))?,
    };
    Ok((host, port))
}

/// Resolves a URL; every address it resolves to must be loopback unless `allow_remote`.
pub fn resolve(url: &str, allow_remote: bool) -> Result<Target, TargetError> {
    let (host, port) = split_url(url)?;
    let addrs: Vec<SocketAddr> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| TargetError::Resolve(host.clone(), e.to_string()))?
        .collect();
    let first = *addrs
        .first()
        .ok_or_else(|| TargetError::Resolve(host.clone(), "no address".into()))?;
    if !allow_remote {
        if let Some(bad) = addrs.iter().find(|a| !a.ip().is_loopback()) {
            return Err(TargetError::NotLoopback {
                host,
                addr: bad.ip(),
            });
        }
    }
    // Prefer IPv4 when a name resolves to both (`localhost`).
    let addr = addrs
        .iter()
        .copied()
        .find(SocketAddr::is_ipv4)
        .unwrap_or(first);
    let host_header = match addr {
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
        SocketAddr::V4(a) => a.to_string(),
    };
    Ok(Target { addr, host_header })
}

/// Checks a listen address for the floor server: loopback unless `allow_remote`.
pub fn check_listen(addr: SocketAddr, allow_remote: bool) -> Result<(), TargetError> {
    if allow_remote || addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(TargetError::NotLoopback {
            host: addr.to_string(),
            addr: addr.ip(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split() {
        assert_eq!(
            split_url("ws://127.0.0.1:9000/ws").unwrap(),
            ("127.0.0.1".into(), 9000)
        );
        assert_eq!(
            split_url("http://localhost").unwrap(),
            ("localhost".into(), 8000)
        );
        assert_eq!(split_url("[::1]:81").unwrap(), ("::1".into(), 81));
        assert_eq!(
            split_url("127.0.0.1:8000").unwrap(),
            ("127.0.0.1".into(), 8000)
        );
        assert!(matches!(
            split_url("wss://x:1"),
            Err(TargetError::Scheme(_))
        ));
        assert!(matches!(
            split_url("ws://x:0"),
            Err(TargetError::BadPort(_))
        ));
        assert!(matches!(split_url("ws://:80"), Err(TargetError::NoHost(_))));
    }

    #[test]
    fn only_loopback_without_allow_remote() {
        assert!(resolve("ws://127.0.0.1:8000", false).is_ok());
        assert!(resolve("127.0.0.9:8000", false).is_ok());
        assert!(resolve("[::1]:8000", false).is_ok());
        assert!(matches!(
            resolve("ws://10.1.2.3:8000", false),
            Err(TargetError::NotLoopback { .. })
        ));
        assert!(matches!(
            resolve("192.168.0.1:80", false),
            Err(TargetError::NotLoopback { .. })
        ));
        // With the override the address is accepted; nothing is sent by resolving.
        assert!(resolve("10.1.2.3:8000", true).is_ok());
        assert!(check_listen("0.0.0.0:1".parse().unwrap(), false).is_err());
        assert!(check_listen("127.0.0.1:1".parse().unwrap(), false).is_ok());
    }
}
