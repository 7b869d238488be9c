//! Canned HTTP responses. Refusals carry `Connection: close` and the JSON body
//! `{"error":"<code>","message":"<text>"}` of the contract, so that a proxy in
//! front shows the client the real status instead of a 502.

use std::fmt::Write as _;

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// A refusal or API error: what the client is told and which status carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// Extra header lines, each ending in `\r\n`.
    pub extra_headers: &'static str,
}

impl Refusal {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            code,
            message: message.into(),
            extra_headers: "",
        }
    }

    pub fn with_headers(mut self, extra: &'static str) -> Refusal {
        self.extra_headers = extra;
        self
    }

    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"error": self.code, "message": self.message}))
            .unwrap_or_default()
    }

    /// The full response. `keep_alive` is only for API errors on a connection that
    /// can go on (a 400 for a bad publish body); handshake refusals always close.
    pub fn to_response(&self, keep_alive: bool) -> Vec<u8> {
        let body = self.body();
        let mut extra = String::from(self.extra_headers);
        if self.status == 401 {
            extra.push_str("WWW-Authenticate: Bearer\r\n");
        }
        response(self.status, "application/json", &extra, &body, keep_alive)
    }
}

pub fn response(
    status: u16,
    content_type: &str,
    extra_headers: &str,
    body: &[u8],
    keep_alive: bool,
) -> Vec<u8> {
    let mut head = String::with_capacity(160 + extra_headers.len());
    let _ = write!(
        head,
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\n{extra_headers}Connection: {}\r\n\r\n",
        reason(status),
        body.len(),
        if keep_alive { "keep-alive" } else { "close" },
    );
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

pub fn json(status: u16, body: &serde_json::Value, keep_alive: bool) -> Vec<u8> {
    let b = serde_json::to_vec(body).unwrap_or_default();
    response(status, "application/json", "", &b, keep_alive)
}

pub fn switching_protocols(accept_key: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept_key}\r\n\r\n"
    )
    .into_bytes()
}

/// The answer to a `HEAD`: the same head as the `GET` would get (its
/// `Content-Length` included, RFC 9110 §9.3.2), without the body.
pub fn head_only(mut full: Vec<u8>) -> Vec<u8> {
    if let Some(i) = full.windows(4).position(|w| w == b"\r\n\r\n") {
        full.truncate(i + 4);
    }
    full
}

pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_shape() {
        let r = Refusal::new(426, "unsupported_version", "use version 13")
            .with_headers("Sec-WebSocket-Version: 13\r\n");
        let text = String::from_utf8(r.to_response(false)).unwrap();
        assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(text.contains("Sec-WebSocket-Version: 13\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"], "unsupported_version");
        assert_eq!(v["message"], "use version 13");
        assert!(text.contains(&format!("Content-Length: {}\r\n", body.len())));
    }
}
