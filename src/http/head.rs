//! Sans-io HTTP/1.x request-head parser on top of `httparse`.
//!
//! The caller appends bytes as they arrive and calls [`parse_head`] again; the
//! head may be split over any number of reads, and bytes after it (a request
//! body, or the first WebSocket frame) are left for the caller, `Complete`
//! says where the head ends. The parser keeps only the headers the server acts
//! on, copied out of the buffer, so the buffer can be reused at once.

/// Headers beyond this many make the head "too large" (431), like nginx.
pub const MAX_HEADERS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Other(String),
}

/// The parts of a request head the server uses. `Debug` redacts the query
/// string and `Authorization` (they carry tokens): see [`RequestHead::loggable_target`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RequestHead {
    pub method: Option<Method>,
    /// The path without the query string, exactly as sent (no decoding).
    pub path: String,
    pub query: Option<String>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub host: Option<String>,
    /// Lower-cased comma-separated tokens of every `Connection` header.
    pub connection: Vec<String>,
    /// Lower-cased tokens of `Upgrade`.
    pub upgrade: Vec<String>,
    pub sec_websocket_key: Option<String>,
    pub sec_websocket_version: Option<String>,
    pub origin: Option<String>,
    pub authorization: Option<Vec<u8>>,
    /// `Content-Length`, when sent (framing: `http::framing`).
    pub content_length: Option<ContentLength>,
    /// Lower-cased codings of every `Transfer-Encoding` header, in order;
    /// `None` when there is no such header.
    pub transfer_encoding: Option<Vec<String>>,
    /// `Host` headers seen (RFC 9112 §3.2: exactly one on HTTP/1.1).
    pub host_count: u8,
    /// `Sec-WebSocket-Key` was sent more than once (400).
    pub duplicate_ws_key: bool,
    pub expect_continue: bool,
    pub x_forwarded_for: Option<String>,
    pub x_real_ip: Option<String>,
}

impl std::fmt::Debug for RequestHead {
    // A token rides in `?token=` or `Authorization`: neither may reach a log line,
    // not even through a debug dump of the head.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |present: bool| if present { "<redacted>" } else { "<none>" };
        f.debug_struct("RequestHead")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &redacted(self.query.is_some()))
            .field("minor_version", &self.minor_version)
            .field("host", &self.host)
            .field("connection", &self.connection)
            .field("upgrade", &self.upgrade)
            .field("sec_websocket_key", &self.sec_websocket_key)
            .field("sec_websocket_version", &self.sec_websocket_version)
            .field("origin", &self.origin)
            .field("authorization", &redacted(self.authorization.is_some()))
            .field("content_length", &self.content_length)
            .field("transfer_encoding", &self.transfer_encoding)
            .field("host_count", &self.host_count)
            .field("duplicate_ws_key", &self.duplicate_ws_key)
            .field("expect_continue", &self.expect_continue)
            .field("x_forwarded_for", &self.x_forwarded_for)
            .field("x_real_ip", &self.x_real_ip)
            .finish()
    }
}

impl RequestHead {
    /// The request target as it may be logged: the path, and `?<redacted>` in
    /// place of any query string (which may hold `token=`).
    pub fn loggable_target(&self) -> String {
        match self.query {
            Some(_) => format!("{}?<redacted>", self.path),
            None => self.path.clone(),
        }
    }

    pub fn method(&self) -> &Method {
        self.method.as_ref().unwrap_or(&Method::Get)
    }

    pub fn connection_has(&self, token: &str) -> bool {
        self.connection.iter().any(|t| t == token)
    }

    /// HTTP/1.1 keeps the connection open unless told otherwise; 1.0 only when asked.
    pub fn keep_alive(&self) -> bool {
        if self.minor_version == 0 {
            self.connection_has("keep-alive")
        } else {
            !self.connection_has("close")
        }
    }
}

/// A `Content-Length` header as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentLength {
    Valid(u64),
    /// Not a plain decimal number, or repeated with different values: a
    /// request-smuggling shape, refused with 400.
    Invalid,
}

#[derive(Debug, PartialEq, Eq)]
pub enum HeadError {
    /// 431: the head is longer than the limit or has too many headers.
    TooLarge,
    /// 400: not HTTP.
    Malformed(&'static str),
}

#[derive(Debug, PartialEq, Eq)]
pub enum HeadStatus {
    /// More bytes are needed.
    Partial,
    /// The head ends at byte `len` of the buffer.
    Complete { head: Box<RequestHead>, len: usize },
}

/// A cheap check before running the full parser, so that a head that trickles in
/// byte by byte (slowloris) costs a scan of the new bytes, not a re-parse.
pub fn has_head_end(buf: &[u8], from: usize) -> bool {
    let start = from.saturating_sub(3);
    buf[start..]
        .windows(2)
        .enumerate()
        .any(|(i, w)| w == b"\n\n" || (w == b"\r\n" && i >= 1 && buf[start + i - 1] == b'\n'))
}

fn tokens(v: &[u8], out: &mut Vec<String>) {
    if let Ok(s) = std::str::from_utf8(v) {
        out.extend(
            s.split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .filter(|t| !t.is_empty()),
        );
    }
}

fn text(v: &[u8]) -> Option<String> {
    std::str::from_utf8(v).ok().map(|s| s.trim().to_string())
}

/// The path and query of a request target. An absolute-form target
/// (`http://host/ws/dashboard/a`, RFC 9112 §3.2.2, as sent to proxies) is
/// accepted and reduced to its path; its authority is not used.
fn origin_form(target: &str) -> std::borrow::Cow<'_, str> {
    let lower = |n: usize| target.get(..n).map(str::to_ascii_lowercase);
    let rest = if lower(7).as_deref() == Some("http://") {
        &target[7..]
    } else if lower(8).as_deref() == Some("https://") {
        &target[8..]
    } else {
        return target.into();
    };
    match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => rest[i..].into(),
        // `http://host?q`: the path is `/`, the query stays.
        Some(i) => format!("/{}", &rest[i..]).into(),
        None => "/".into(),
    }
}

/// Parse the head at the start of `buf`, at most `max_len` bytes long.
pub fn parse_head(buf: &[u8], max_len: usize) -> Result<HeadStatus, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > max_len {
                Err(HeadError::TooLarge)
            } else {
                Ok(HeadStatus::Partial)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(httparse::Error::Version) => {
            return Err(HeadError::Malformed("not an HTTP/1.x request"))
        }
        Err(_) => return Err(HeadError::Malformed("malformed request head")),
    };
    if len > max_len {
        return Err(HeadError::TooLarge);
    }
    let method = match req.method.unwrap_or("") {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        other => Method::Other(other.to_string()),
    };
    // Bare LF line ends are refused: a proxy in front that reads them
    // differently could otherwise be made to disagree on where a request ends.
    if buf[..len]
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || buf[i - 1] != b'\r'))
    {
        return Err(HeadError::Malformed("line endings must be CRLF"));
    }
    let target = req.path.unwrap_or("/");
    // RFC 9112 §3.2: a request target is ASCII (httparse also lets UTF-8 through).
    if !target.is_ascii() {
        return Err(HeadError::Malformed("the request target must be ASCII"));
    }
    let target = origin_form(target);
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (target.to_string(), None),
    };
    let mut head = RequestHead {
        method: Some(method),
        path,
        query,
        minor_version: req.version.unwrap_or(1),
        ..RequestHead::default()
    };
    for h in req.headers.iter() {
        let v = h.value;
        let name = h.name;
        if name.eq_ignore_ascii_case("connection") {
            tokens(v, &mut head.connection);
        } else if name.eq_ignore_ascii_case("upgrade") {
            tokens(v, &mut head.upgrade);
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            head.duplicate_ws_key |= head.sec_websocket_key.is_some();
            head.sec_websocket_key = text(v);
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            head.sec_websocket_version = text(v);
        } else if name.eq_ignore_ascii_case("origin") {
            head.origin = text(v);
        } else if name.eq_ignore_ascii_case("authorization") {
            head.authorization = Some(v.to_vec());
        } else if name.eq_ignore_ascii_case("host") {
            head.host_count = head.host_count.saturating_add(1);
            head.host = text(v);
        } else if name.eq_ignore_ascii_case("content-length") {
            let parsed = text(v)
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .map_or(ContentLength::Invalid, ContentLength::Valid);
            head.content_length = match (head.content_length.take(), parsed) {
                (None, p) => Some(p),
                (Some(ContentLength::Valid(a)), ContentLength::Valid(b)) if a == b => {
                    Some(ContentLength::Valid(a))
                }
                _ => Some(ContentLength::Invalid),
            };
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Every coding of every header, in order: `chunked` must be the last one.
            let codings = head.transfer_encoding.get_or_insert_with(Vec::new);
            match std::str::from_utf8(v) {
                Ok(s) => codings.extend(s.split(',').map(|t| t.trim().to_ascii_lowercase())),
                Err(_) => codings.push(String::new()),
            }
        } else if name.eq_ignore_ascii_case("expect") {
            head.expect_continue = text(v).is_some_and(|s| s.eq_ignore_ascii_case("100-continue"));
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            head.x_forwarded_for = text(v);
        } else if name.eq_ignore_ascii_case("x-real-ip") {
            head.x_real_ip = text(v);
        }
    }
    Ok(HeadStatus::Complete {
        head: Box::new(head),
        len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &[u8] = b"GET /ws/dashboard/loc-1?token=abc&events=A,B HTTP/1.1\r\n\
        Host: localhost\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    fn complete(buf: &[u8]) -> (RequestHead, usize) {
        match parse_head(buf, 8192) {
            Ok(HeadStatus::Complete { head, len }) => (*head, len),
            other => panic!("expected complete, got {other:?}"),
        }
    }

    #[test]
    fn parses_an_upgrade() {
        let (h, len) = complete(UPGRADE);
        assert_eq!(len, UPGRADE.len());
        assert_eq!(h.method(), &Method::Get);
        assert_eq!(h.path, "/ws/dashboard/loc-1");
        assert_eq!(h.query.as_deref(), Some("token=abc&events=A,B"));
        assert!(h.connection_has("upgrade"));
        assert_eq!(h.upgrade, vec!["websocket"]);
        assert_eq!(h.sec_websocket_version.as_deref(), Some("13"));
        assert!(h.keep_alive());
    }

    #[test]
    fn every_split_point_is_partial_then_complete() {
        for cut in 0..UPGRADE.len() {
            assert_eq!(
                parse_head(&UPGRADE[..cut], 8192),
                Ok(HeadStatus::Partial),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn bytes_after_the_head_are_left_alone() {
        let mut buf = UPGRADE.to_vec();
        buf.extend_from_slice(&[0x81, 0x85, 1, 2, 3, 4]);
        let (_, len) = complete(&buf);
        assert_eq!(len, UPGRADE.len());
    }

    #[test]
    fn head_end_detection() {
        assert!(has_head_end(UPGRADE, 0));
        assert!(has_head_end(UPGRADE, UPGRADE.len() - 1));
        assert!(!has_head_end(&UPGRADE[..UPGRADE.len() - 1], 0));
        assert!(has_head_end(b"GET / HTTP/1.1\n\n", 0));
        // Found even when the terminator straddles two reads.
        let n = UPGRADE.len();
        assert!(has_head_end(UPGRADE, n - 2));
    }

    #[test]
    fn too_large() {
        let mut big = b"GET / HTTP/1.1\r\nX-Pad: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 9000));
        assert_eq!(parse_head(&big, 8192), Err(HeadError::TooLarge));
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse_head(&big, 8192), Err(HeadError::TooLarge));
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..100 {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse_head(&many, 8192), Err(HeadError::TooLarge));
    }

    #[test]
    fn malformed() {
        assert!(matches!(
            parse_head(
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
                8192
            ),
            Err(HeadError::Malformed(_))
        ));
        assert!(matches!(
            parse_head(b"GET / SPDY/3\r\n\r\n", 8192),
            Err(HeadError::Malformed(_))
        ));
    }

    #[test]
    fn content_length_rules() {
        let (h, _) = complete(b"POST /api/events HTTP/1.1\r\nContent-Length: 12\r\n\r\n");
        assert_eq!(h.content_length, Some(ContentLength::Valid(12)));
        let (h, _) = complete(b"POST /api/events HTTP/1.1\r\nContent-Length: +12\r\n\r\n");
        assert_eq!(h.content_length, Some(ContentLength::Invalid));
        let (h, _) = complete(
            b"POST /api/events HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        );
        assert_eq!(h.content_length, Some(ContentLength::Invalid));
        let (h, _) = complete(
            b"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: Chunked\r\nExpect: 100-continue\r\n\r\n",
        );
        assert_eq!(
            h.transfer_encoding,
            Some(vec!["gzip".to_string(), "chunked".to_string()])
        );
        assert!(h.expect_continue);
        let (h, _) = complete(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(h.transfer_encoding, None);
    }

    #[test]
    fn debug_and_loggable_target_never_show_a_token() {
        let (h, _) = complete(
            b"GET /ws/dashboard/loc-1?token=sekrit.jwt.sig HTTP/1.1\r\nAuthorization: Bearer hidden.jwt.sig\r\n\r\n",
        );
        let shown = format!("{h:?} {h:#?} {}", h.loggable_target());
        assert!(
            !shown.contains("sekrit") && !shown.contains("hidden"),
            "{shown}"
        );
        assert_eq!(h.loggable_target(), "/ws/dashboard/loc-1?<redacted>");
        let (h, _) = complete(b"GET /healthz HTTP/1.1\r\n\r\n");
        assert_eq!(h.loggable_target(), "/healthz");
    }

    #[test]
    fn absolute_form_targets_and_hosts() {
        let (h, _) = complete(
            b"GET http://example.com:8000/ws/dashboard/a?since=1 HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
        );
        assert_eq!(h.path, "/ws/dashboard/a");
        assert_eq!(h.query.as_deref(), Some("since=1"));
        assert_eq!(h.host_count, 2);
        let (h, _) = complete(b"GET HTTPS://example.com HTTP/1.1\r\n\r\n");
        assert_eq!(h.path, "/");
        let (h, _) = complete(b"GET /http://x/y HTTP/1.1\r\n\r\n");
        assert_eq!(h.path, "/http://x/y");
    }

    #[test]
    fn bare_lf_and_duplicate_keys() {
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\nHost: x\n\n", 8192),
            Err(HeadError::Malformed("line endings must be CRLF"))
        );
        let (h, _) =
            complete(b"GET / HTTP/1.1\r\nSec-WebSocket-Key: a\r\nsec-websocket-key: a\r\n\r\n");
        assert!(h.duplicate_ws_key);
    }

    #[test]
    fn keep_alive_rules() {
        let (h, _) = complete(b"GET /healthz HTTP/1.0\r\n\r\n");
        assert!(!h.keep_alive());
        let (h, _) = complete(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(h.keep_alive());
        let (h, _) = complete(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(!h.keep_alive());
    }
}
