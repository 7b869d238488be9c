//! The client side of the WebSocket upgrade, sans-io: build the request, parse the
//! server's answer.

use thiserror::Error;
use tungstenite::handshake::derive_accept_key;

/// Largest response head accepted before the upgrade is given up.
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// An upgrade that did not succeed; the subscriber loop counts it by `kind()`.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HandshakeError {
    #[error("server refused the upgrade with HTTP {0}")]
    Refused(u16),
    #[error("malformed HTTP response: {0}")]
    Malformed(String),
    #[error("response head over {MAX_RESPONSE_HEAD} bytes")]
    TooLarge,
    #[error("101 without a valid Upgrade/Sec-WebSocket-Accept")]
    BadAccept,
}

impl HandshakeError {
    /// A short label for the failure table (`http_401`, `bad_response`).
    pub fn kind(&self) -> String {
        match self {
            HandshakeError::Refused(status) => format!("http_{status}"),
            HandshakeError::Malformed(_) | HandshakeError::TooLarge => "bad_response".into(),
            HandshakeError::BadAccept => "bad_accept".into(),
        }
    }
}

/// The upgrade request for `path` with the query parameters given (`token`,
/// `conflate`, `snapshot`; their values need no escaping: JWTs are base64url).
pub fn upgrade_request(path: &str, host: &str, params: &[(&str, &str)], key: &str) -> Vec<u8> {
    let mut query = String::new();
    for (i, (name, value)) in params.iter().enumerate() {
        query.push(if i == 0 { '?' } else { '&' });
        query.push_str(name);
        query.push('=');
        query.push_str(value);
    }
    format!(
        "GET {path}{query} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nUser-Agent: bistream-loadtest\r\n\r\n"
    )
    .into_bytes()
}

/// Parses the response to an upgrade. `Ok(None)`: incomplete; `Ok(Some(n))`: switched,
/// the head was `n` bytes and whatever follows is WebSocket frames.
pub fn parse_response(buf: &[u8], key: &str) -> Result<Option<usize>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_RESPONSE_HEAD {
                return Err(HandshakeError::TooLarge);
            }
            return Ok(None);
        }
        Err(e) => return Err(HandshakeError::Malformed(e.to_string())),
    };
    let status = resp.code.unwrap_or(0);
    if status != 101 {
        return Err(HandshakeError::Refused(status));
    }
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let upgrade_ok = header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case(b"websocket"));
    let expected = derive_accept_key(key.as_bytes());
    let accept_ok = header("sec-websocket-accept").is_some_and(|v| v == expected.as_bytes());
    if upgrade_ok && accept_ok {
        Ok(Some(n))
    } else {
        Err(HandshakeError::BadAccept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    #[test]
    fn request_carries_token_and_key() {
        let r = upgrade_request(
            "/ws/dashboard/loc-1",
            "127.0.0.1:8000",
            &[("token", "a.b.c")],
            KEY,
        );
        let s = String::from_utf8(r).unwrap();
        assert!(s.starts_with("GET /ws/dashboard/loc-1?token=a.b.c HTTP/1.1\r\n"));
        let r = upgrade_request("/ws/x/l", "h", &[("conflate", "1"), ("snapshot", "1")], KEY);
        assert!(r.starts_with(b"GET /ws/x/l?conflate=1&snapshot=1 HTTP/1.1\r\n"));
        let r = upgrade_request("/ws/x/l", "h", &[], KEY);
        assert!(r.starts_with(b"GET /ws/x/l HTTP/1.1\r\n"));
        assert!(s.contains("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"));
        assert!(s.ends_with("\r\n\r\n"));
    }

    #[test]
    fn accepts_the_rfc_example_and_refusals() {
        let ok = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x02{}";
        assert_eq!(parse_response(ok, KEY), Ok(Some(ok.len() - 4)));
        assert_eq!(parse_response(&ok[..20], KEY), Ok(None));
        let bad = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: nope\r\n\r\n";
        assert_eq!(parse_response(bad, KEY), Err(HandshakeError::BadAccept));
        let refused = b"HTTP/1.1 401 Unauthorized\r\nConnection: close\r\n\r\n{}";
        assert_eq!(
            parse_response(refused, KEY),
            Err(HandshakeError::Refused(401))
        );
        assert_eq!(HandshakeError::Refused(503).kind(), "http_503");
    }
}
