//! Request framing (RFC 9112 §6): where each request on a connection ends.
//!
//! Decided from the head alone, before any route runs, so that no byte of a
//! body can ever be read as the next request (request smuggling):
//!
//! - `Transfer-Encoding` together with `Content-Length`, on an HTTP/1.0
//!   request, or naming anything but a single `chunked`: refused, and the
//!   connection closed (its framing cannot be trusted).
//! - A body on a request that takes none (everything but `POST /api/events`):
//!   refused with 400 and closed, never skipped or parsed as a request.
//! - An HTTP/1.1 request without `Host`, or any request with two: 400.
//! - A chunked body is decoded strictly (CRLF only, bounded size lines and
//!   trailers, sizes checked against the body limit before they are buffered).
//!
//! [`RequestFramer`] is the one place the HTTP phase of a connection gets its
//! requests from; it is sans-io (bytes in, requests out) so that the fuzz
//! tests can hold it against an independent reference parser.

use crate::http::head::{
    has_head_end, parse_head, ContentLength, HeadError, HeadStatus, RequestHead,
};
use crate::http::router::takes_body;

/// Longest chunk-size line (size and extensions) or trailer line accepted.
const MAX_CHUNK_LINE: usize = 1024;
/// Most trailer bytes after the last chunk.
const MAX_TRAILERS: usize = 8 * 1024;

/// How the body of a request is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

/// Why a request's framing is refused. Every one closes the connection: after
/// it the server cannot know where the next request would start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("an HTTP/1.1 request needs a Host header")]
    MissingHost,
    #[error("a request may carry only one Host header")]
    DuplicateHost,
    #[error("Transfer-Encoding and Content-Length together are not accepted")]
    TransferEncodingWithLength,
    #[error("Transfer-Encoding is not valid on an HTTP/1.0 request")]
    TransferEncodingOnHttp10,
    #[error("the final transfer coding of a request must be chunked")]
    ChunkedNotFinal,
    #[error("only the chunked transfer coding is accepted")]
    UnsupportedCoding,
    #[error("invalid Content-Length")]
    BadContentLength,
    #[error("this request takes no body")]
    UnexpectedBody,
    #[error("the body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("malformed chunked body: {0}")]
    BadChunk(&'static str),
}

impl FramingError {
    /// The HTTP status the refusal carries.
    pub fn status(&self) -> u16 {
        match self {
            FramingError::UnsupportedCoding => 501,
            FramingError::BodyTooLarge { .. } => 413,
            _ => 400,
        }
    }
}

/// RFC 9112 §6.1–docs/protocol.md §6.3 and docs/protocol.md §3.2 for one request head.
pub fn body_framing(head: &RequestHead) -> Result<BodyFraming, FramingError> {
    if head.host_count > 1 {
        return Err(FramingError::DuplicateHost);
    }
    if head.host_count == 0 && head.minor_version >= 1 {
        return Err(FramingError::MissingHost);
    }
    if let Some(codings) = &head.transfer_encoding {
        if head.minor_version == 0 {
            return Err(FramingError::TransferEncodingOnHttp10);
        }
        if head.content_length.is_some() {
            return Err(FramingError::TransferEncodingWithLength);
        }
        let chunked = codings.iter().filter(|c| *c == "chunked").count();
        return if codings.last().map(String::as_str) != Some("chunked")
            || chunked > 1
            || codings.iter().any(String::is_empty)
        {
            // Not ending in exactly one chunked: the length cannot be known.
            Err(FramingError::ChunkedNotFinal)
        } else if codings.len() > 1 {
            // Framable, but the inner coding (gzip, …) is not one we decode.
            Err(FramingError::UnsupportedCoding)
        } else {
            Ok(BodyFraming::Chunked)
        };
    }
    match head.content_length {
        None => Ok(BodyFraming::None),
        Some(ContentLength::Invalid) => Err(FramingError::BadContentLength),
        Some(ContentLength::Valid(0)) => Ok(BodyFraming::None),
        Some(ContentLength::Valid(n)) => Ok(BodyFraming::Length(n)),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading a chunk-size line.
    Size,
    /// Inside a chunk's data.
    Data {
        left: u64,
    },
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines after the last (zero) chunk, up to an empty line.
    Trailers {
        bytes: usize,
    },
    Done,
}

#[derive(Debug)]
enum Reading {
    Length { left: u64 },
    Chunked { state: Chunk, line: Vec<u8> },
}

/// Collects one request body, `Content-Length` or chunked, within `limit`.
#[derive(Debug)]
pub struct BodyReader {
    reading: Reading,
    limit: usize,
    body: Vec<u8>,
}

impl BodyReader {
    pub fn new(framing: BodyFraming, limit: usize) -> Result<BodyReader, FramingError> {
        let reading = match framing {
            BodyFraming::None => Reading::Length { left: 0 },
            BodyFraming::Length(n) if n > limit as u64 => {
                return Err(FramingError::BodyTooLarge { limit })
            }
            BodyFraming::Length(n) => Reading::Length { left: n },
            BodyFraming::Chunked => Reading::Chunked {
                state: Chunk::Size,
                line: Vec::new(),
            },
        };
        let cap = match reading {
            Reading::Length { left } => left as usize,
            Reading::Chunked { .. } => 0,
        };
        Ok(BodyReader {
            reading,
            limit,
            body: Vec::with_capacity(cap),
        })
    }

    pub fn is_done(&self) -> bool {
        matches!(
            self.reading,
            Reading::Length { left: 0 }
                | Reading::Chunked {
                    state: Chunk::Done,
                    ..
                }
        )
    }

    /// Bytes still expected, when known (`Content-Length` bodies): lets the
    /// caller answer `Expect: 100-continue` only when the body is not all in.
    pub fn is_waiting(&self, buffered: usize) -> bool {
        match self.reading {
            Reading::Length { left } => (buffered as u64) < left,
            Reading::Chunked { state, .. } => state != Chunk::Done,
        }
    }

    pub fn into_body(self) -> Vec<u8> {
        self.body
    }

    /// Takes what belongs to the body from the front of `input`; returns the
    /// number of bytes used. Bytes after the body are left alone.
    pub fn feed(&mut self, input: &[u8]) -> Result<usize, FramingError> {
        let limit = self.limit;
        match &mut self.reading {
            Reading::Length { left } => {
                let take = (*left).min(input.len() as u64) as usize;
                self.body.extend_from_slice(&input[..take]);
                *left -= take as u64;
                Ok(take)
            }
            Reading::Chunked { state, line } => {
                feed_chunked(state, line, &mut self.body, limit, input)
            }
        }
    }
}

fn feed_chunked(
    state: &mut Chunk,
    line: &mut Vec<u8>,
    body: &mut Vec<u8>,
    limit: usize,
    input: &[u8],
) -> Result<usize, FramingError> {
    let mut used = 0;
    while used < input.len() {
        let rest = &input[used..];
        match *state {
            Chunk::Done => break,
            Chunk::Data { left } => {
                let take = left.min(rest.len() as u64) as usize;
                body.extend_from_slice(&rest[..take]);
                used += take;
                *state = if left == take as u64 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data {
                        left: left - take as u64,
                    }
                };
            }
            Chunk::DataEnd => {
                // Exactly CRLF; the two bytes may arrive apart.
                let want: &[u8] = if line.is_empty() { b"\r\n" } else { b"\n" };
                let n = want.len().min(rest.len());
                if rest[..n] != want[..n] {
                    return Err(FramingError::BadChunk("chunk data not followed by CRLF"));
                }
                used += n;
                if n == want.len() {
                    line.clear();
                    *state = Chunk::Size;
                } else {
                    line.push(b'\r');
                }
            }
            Chunk::Size | Chunk::Trailers { .. } => {
                let Some(end) = rest.iter().position(|&b| b == b'\n') else {
                    line.extend_from_slice(rest);
                    used = input.len();
                    if line.len() > MAX_CHUNK_LINE {
                        return Err(FramingError::BadChunk("chunk line too long"));
                    }
                    // A CR not followed by LF is refused now, not when the line ends.
                    if line.iter().rev().skip(1).any(|&b| b == b'\r') {
                        return Err(FramingError::BadChunk("bare CR or LF in a chunk line"));
                    }
                    break;
                };
                line.extend_from_slice(&rest[..=end]);
                used += end + 1;
                if line.len() > MAX_CHUNK_LINE {
                    return Err(FramingError::BadChunk("chunk line too long"));
                }
                let text = strip_crlf(line)?;
                *state = match *state {
                    Chunk::Size => {
                        let size = chunk_size(text)?;
                        if body.len() as u64 + size > limit as u64 {
                            return Err(FramingError::BodyTooLarge { limit });
                        }
                        if size == 0 {
                            Chunk::Trailers { bytes: 0 }
                        } else {
                            Chunk::Data { left: size }
                        }
                    }
                    Chunk::Trailers { bytes } if text.is_empty() => {
                        let _ = bytes;
                        Chunk::Done
                    }
                    Chunk::Trailers { bytes } => {
                        trailer_line(text)?;
                        let bytes = bytes + line.len();
                        if bytes > MAX_TRAILERS {
                            return Err(FramingError::BadChunk("trailers too long"));
                        }
                        Chunk::Trailers { bytes }
                    }
                    other => other,
                };
                line.clear();
            }
        }
    }
    Ok(used)
}

/// A line must end in CRLF, with no other CR or LF inside (no bare LF).
fn strip_crlf(line: &[u8]) -> Result<&[u8], FramingError> {
    let text = line
        .strip_suffix(b"\r\n")
        .ok_or(FramingError::BadChunk("line not ended by CRLF"))?;
    if text.iter().any(|&b| b == b'\r' || b == b'\n') {
        return Err(FramingError::BadChunk("bare CR or LF in a chunk line"));
    }
    Ok(text)
}

/// `1*HEXDIG [ chunk-ext ]`; extensions are allowed and ignored, but must be
/// `;`-introduced visible text. No whitespace, sign or `0x` before the size.
fn chunk_size(text: &[u8]) -> Result<u64, FramingError> {
    let digits = text.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(FramingError::BadChunk("missing chunk size"));
    }
    let ext = &text[digits..];
    if !ext.is_empty() {
        let ext = ext.trim_ascii_start();
        if ext.first() != Some(&b';') || ext.iter().any(|&b| b < 0x20 && b != b'\t' || b == 0x7f) {
            return Err(FramingError::BadChunk("invalid chunk extension"));
        }
    }
    let hex = &text[..digits];
    let significant = hex.iter().skip_while(|&&b| b == b'0').count();
    if significant > 15 {
        return Err(FramingError::BadChunk("chunk size too large"));
    }
    let mut n: u64 = 0;
    for &b in hex {
        let v = (b as char).to_digit(16).unwrap_or(0) as u64;
        n = n * 16 + v;
    }
    Ok(n)
}

/// A trailer field line: `name: value` with a token name.
fn trailer_line(text: &[u8]) -> Result<(), FramingError> {
    let colon = text
        .iter()
        .position(|&b| b == b':')
        .ok_or(FramingError::BadChunk("trailer line without a colon"))?;
    let name = &text[..colon];
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(FramingError::BadChunk("invalid trailer field name"));
    }
    if text[colon + 1..]
        .iter()
        .any(|&b| b < 0x20 && b != b'\t' || b == 0x7f)
    {
        return Err(FramingError::BadChunk("invalid trailer field value"));
    }
    Ok(())
}

/// RFC 9110 `tchar`.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// What the framer found at the front of the connection's input.
#[derive(Debug)]
pub enum Framed {
    /// More bytes are needed.
    NeedMore,
    /// A request without a body.
    Request(Box<RequestHead>),
    /// The head of a request that takes a body: [`RequestFramer::head`] shows
    /// it, so the caller can refuse it (auth, `Expect`) before the body is read.
    /// Call `next` again to read the body.
    BodyStart,
    /// A request and its whole body.
    WithBody(Box<RequestHead>, Vec<u8>),
    /// The head parsed, but its framing is refused: answer and close. The head
    /// is given so that a route's own refusal (404/405 on `/ws/`) can win.
    Invalid(Box<RequestHead>, FramingError),
    /// Not a request head at all (400/431): answer and close.
    Malformed(HeadError),
}

/// The sequence of requests on one connection: heads (across any number of
/// reads), then each body by its framing. Sans-io: `next` is handed the
/// unconsumed input and says how much of it it used.
#[derive(Debug)]
pub struct RequestFramer {
    max_head: usize,
    max_body: usize,
    /// Bytes of the current head already searched for its end.
    scanned: usize,
    body: Option<(Box<RequestHead>, BodyReader)>,
}

impl RequestFramer {
    pub fn new(max_head: usize, max_body: usize) -> RequestFramer {
        RequestFramer {
            max_head,
            max_body,
            scanned: 0,
            body: None,
        }
    }

    /// The head of the request whose body is being read.
    pub fn head(&self) -> Option<&RequestHead> {
        self.body.as_ref().map(|(h, _)| &**h)
    }

    /// Is a body being read, and is some of it still missing beyond `buffered`?
    pub fn body_waiting(&self, buffered: usize) -> bool {
        self.body
            .as_ref()
            .is_some_and(|(_, r)| r.is_waiting(buffered))
    }

    /// Between requests, with nothing half-read.
    pub fn is_idle(&self) -> bool {
        self.body.is_none() && self.scanned == 0
    }

    /// The next step from `input` (the connection's unconsumed bytes) and how
    /// many of them it consumed.
    pub fn next(&mut self, input: &[u8]) -> (Framed, usize) {
        if let Some((_, reader)) = &mut self.body {
            let used = match reader.feed(input) {
                Ok(n) => n,
                Err(e) => {
                    let Some((head, _)) = self.body.take() else {
                        unreachable!("checked above")
                    };
                    return (Framed::Invalid(head, e), 0);
                }
            };
            if !reader.is_done() {
                return (Framed::NeedMore, used);
            }
            let Some((head, reader)) = self.body.take() else {
                unreachable!("checked above")
            };
            return (Framed::WithBody(head, reader.into_body()), used);
        }
        if input.is_empty() {
            return (Framed::NeedMore, 0);
        }
        if !has_head_end(input, self.scanned) {
            self.scanned = input.len();
            if input.len() > self.max_head {
                return (Framed::Malformed(HeadError::TooLarge), 0);
            }
            return (Framed::NeedMore, 0);
        }
        let (head, len) = match parse_head(input, self.max_head) {
            Ok(HeadStatus::Partial) => {
                self.scanned = input.len();
                return (Framed::NeedMore, 0);
            }
            Err(e) => return (Framed::Malformed(e), 0),
            Ok(HeadStatus::Complete { head, len }) => (head, len),
        };
        self.scanned = 0;
        let framing = match body_framing(&head) {
            Ok(f) => f,
            Err(e) => return (Framed::Invalid(head, e), len),
        };
        let wants_body = takes_body(head.method(), &head.path);
        match (framing, wants_body) {
            (BodyFraming::None, _) if !wants_body => (Framed::Request(head), len),
            (_, false) => (Framed::Invalid(head, FramingError::UnexpectedBody), len),
            (framing, true) => match BodyReader::new(framing, self.max_body) {
                Ok(reader) => {
                    self.body = Some((head, reader));
                    (Framed::BodyStart, len)
                }
                Err(e) => (Framed::Invalid(head, e), len),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 1 << 20;

    /// Feeds `input` in pieces of `step` bytes; the requests found, as
    /// (method target, body), and the error that stopped it, if any.
    fn run(input: &[u8], step: usize) -> (Vec<(String, Vec<u8>)>, Option<String>) {
        let mut f = RequestFramer::new(8192, LIMIT);
        let mut out = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut fed = 0;
        loop {
            let (r, used) = f.next(&buf);
            buf.drain(..used);
            match r {
                Framed::NeedMore => {
                    if fed == input.len() {
                        return (out, None);
                    }
                    let end = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
                Framed::BodyStart => {}
                Framed::Request(h) => out.push((format!("{:?} {}", h.method(), h.path), vec![])),
                Framed::WithBody(h, b) => out.push((format!("{:?} {}", h.method(), h.path), b)),
                Framed::Invalid(_, e) => return (out, Some(e.to_string())),
                Framed::Malformed(e) => return (out, Some(format!("{e:?}"))),
            }
        }
    }

    fn every_split(input: &[u8]) -> (Vec<(String, Vec<u8>)>, Option<String>) {
        let whole = run(input, input.len().max(1));
        for step in 1..input.len().min(64) {
            assert_eq!(run(input, step), whole, "step {step}");
        }
        whole
    }

    #[test]
    fn smuggled_request_in_a_get_body_is_refused() {
        let inner = b"POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}";
        let mut req = format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            inner.len()
        )
        .into_bytes();
        req.extend_from_slice(inner);
        let (reqs, err) = every_split(&req);
        assert!(reqs.is_empty(), "{reqs:?}");
        assert_eq!(err.as_deref(), Some("this request takes no body"));
        let chunked =
            b"GET /nope HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(
            every_split(chunked).1.as_deref(),
            Some("this request takes no body")
        );
        // An empty body is no body.
        let ok = b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\nGET /readyz HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(every_split(ok).0.len(), 2);
    }

    #[test]
    fn transfer_coding_rules() {
        let post = |te: &str, cl: &str| {
            format!("POST /api/events HTTP/1.1\r\nHost: x\r\n{te}{cl}\r\n{{}}")
        };
        let err = |s: String| every_split(s.as_bytes()).1;
        for te in ["gzip", "identity", "xchunked", "chunked, gzip", ""] {
            let e = err(post(
                &format!("Transfer-Encoding: {te}\r\n"),
                "Content-Length: 2\r\n",
            ));
            assert_eq!(
                e.as_deref(),
                Some("Transfer-Encoding and Content-Length together are not accepted"),
                "{te}"
            );
        }
        assert_eq!(
            err(post("Transfer-Encoding: gzip\r\n", "")).as_deref(),
            Some("the final transfer coding of a request must be chunked")
        );
        assert_eq!(
            err(post("Transfer-Encoding: gzip, chunked\r\n", "")).as_deref(),
            Some("only the chunked transfer coding is accepted")
        );
        assert_eq!(
            err(post("Transfer-Encoding: chunked, gzip\r\n", "")).as_deref(),
            Some("the final transfer coding of a request must be chunked")
        );
        assert_eq!(
            err(post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                ""
            ))
            .as_deref(),
            Some("the final transfer coding of a request must be chunked")
        );
        let http10 = "POST /api/events HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(
            err(http10.to_string()).as_deref(),
            Some("Transfer-Encoding is not valid on an HTTP/1.0 request")
        );
        let e = FramingError::UnsupportedCoding;
        assert_eq!(e.status(), 501);
        assert_eq!(FramingError::ChunkedNotFinal.status(), 400);
    }

    #[test]
    fn host_rules() {
        let (_, e) = every_split(b"GET /healthz HTTP/1.1\r\n\r\n");
        assert_eq!(
            e.as_deref(),
            Some("an HTTP/1.1 request needs a Host header")
        );
        let (_, e) = every_split(b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
        assert_eq!(
            e.as_deref(),
            Some("a request may carry only one Host header")
        );
        let (r, e) = every_split(b"GET /healthz HTTP/1.0\r\n\r\n");
        assert_eq!((r.len(), e), (1, None));
    }

    #[test]
    fn chunked_bodies_decode_across_every_split() {
        let req = b"POST /api/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
            4;ext=1\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\nX-Trailer: y\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
        let (reqs, err) = every_split(req);
        assert_eq!(err, None);
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].1, b"{\"a\":1}");
        assert_eq!(reqs[1].0, "Get /healthz");
    }

    #[test]
    fn bad_chunks_are_refused() {
        let with = |body: &str| {
            let req = format!(
                "POST /api/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
            );
            every_split(req.as_bytes()).1
        };
        for bad in [
            "x\r\n",
            " 1\r\na\r\n0\r\n\r\n",
            "0x1\r\na\r\n0\r\n\r\n",
            "-1\r\n",
            "1\na\r\n0\r\n\r\n",
            "1\r\nab\r\n",
            "1\r\na\n0\r\n\r\n",
            "10000000000000000\r\n",
            "1 x\r\na\r\n0\r\n\r\n",
            "0\r\nno colon\r\n\r\n",
            "0\r\nbad name: v\r\n\r\n",
        ] {
            assert!(
                with(bad).is_some_and(|e| e.starts_with("malformed")),
                "{bad:?}: {:?}",
                with(bad)
            );
        }
        let long = format!("1;{}\r\n", "e".repeat(2000));
        assert!(with(&long).is_some());
        assert_eq!(
            with("100001\r\n").as_deref(),
            Some("the body is larger than 1048576 bytes")
        );
    }

    #[test]
    fn content_length_bodies() {
        let (r, e) = every_split(
            b"POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        assert_eq!(e, None);
        assert_eq!(r[0].1, b"abc");
        assert_eq!(r.len(), 2);
        let (_, e) =
            every_split(b"POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n");
        assert_eq!(e.as_deref(), Some("the body is larger than 1048576 bytes"));
        let (_, e) =
            every_split(b"POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 2\r\n\r\n");
        assert_eq!(e.as_deref(), Some("invalid Content-Length"));
        // POST without a body is a request with an empty one.
        let (r, e) = every_split(b"POST /api/events HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((r.len(), e), (1, None));
    }
}
