//! The whole HTTP request sequence of one connection: the server's framer
//! (`bistream::http::framing::RequestFramer`, fed in pieces as reads would
//! deliver them) must act on exactly the requests that a strict reference
//! parser, written here from RFC 9112 and `docs/protocol.md` §5 without
//! httparse, sees in the same bytes. A difference is a smuggling bug: one side
//! would take a body for a request, or a request for a body.

use bistream::http::framing::{Framed, RequestFramer};

pub const MAX_HEAD: usize = 8192;
pub const MAX_BODY: usize = 1 << 20;

/// One request as acted on: method, path (query and absolute-form authority
/// stripped), body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acted {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
}

/// How a byte sequence ends for a parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Every byte belongs to a complete request.
    Clean,
    /// A request (head or body) is incomplete.
    Incomplete,
    /// A request was refused; nothing after it is read.
    Refused,
    /// A head not complete yet already holds a byte no head may hold: the
    /// reference refuses at once; the server may wait for the head's end
    /// (then refuse it) or refuse early. Either way no request is acted on.
    RefusedPartial,
}

/// The server's framer over `data`, delivered `step` bytes at a time.
pub fn server(data: &[u8], step: usize) -> (Vec<Acted>, End) {
    let mut f = RequestFramer::new(MAX_HEAD, MAX_BODY);
    let mut out = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    loop {
        let (r, used) = f.next(&buf);
        buf.drain(..used);
        match r {
            Framed::NeedMore => {
                if fed == data.len() {
                    let end = if buf.is_empty() && f.is_idle() {
                        End::Clean
                    } else {
                        End::Incomplete
                    };
                    return (out, end);
                }
                let end = (fed + step.max(1)).min(data.len());
                buf.extend_from_slice(&data[fed..end]);
                fed = end;
            }
            Framed::BodyStart => {}
            Framed::Request(h) => out.push(Acted {
                method: method_name(h.method()),
                path: h.path.clone(),
                body: Vec::new(),
            }),
            Framed::WithBody(h, body) => out.push(Acted {
                method: method_name(h.method()),
                path: h.path.clone(),
                body,
            }),
            Framed::Invalid(..) | Framed::Malformed(_) => return (out, End::Refused),
        }
    }
}

fn method_name(m: &bistream::http::head::Method) -> String {
    use bistream::http::head::Method;
    match m {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Other(s) => s.clone(),
    }
}

/// The property: for any split of the bytes, the server acts on exactly the
/// requests the reference sees, and stops where the reference refuses.
pub fn check(data: &[u8]) {
    let (want, want_end) = reference(data);
    let steps = [
        data.len().max(1),
        1,
        7,
        1 + data.first().copied().unwrap_or(0) as usize,
    ];
    for step in steps {
        let (got, end) = server(data, step);
        assert_eq!(
            got,
            want,
            "requests differ (step {step}) for {:?}",
            String::from_utf8_lossy(data)
        );
        match (want_end, end) {
            (a, b) if a == b => {}
            // An incomplete request the reference would refuse once complete
            // may be refused early by the server (a bad byte in a partial
            // head, say): it acted on nothing more either way.
            (End::Incomplete, End::Refused) => {}
            (End::RefusedPartial, End::Incomplete | End::Refused) => {}
            (a, b) => panic!(
                "reference ends {a:?}, server {b:?} (step {step}) for {:?}",
                String::from_utf8_lossy(data)
            ),
        }
    }
}

// ---------------------------------------------------------------------------
// The reference parser: byte by byte, from the grammar.

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_field_byte(b: u8) -> bool {
    b == b'\t' || (0x20..=0x7e).contains(&b) || b >= 0x80
}

/// Where the next CRLF starts at or after `from`; a bare CR or LF before it is
/// an error (`Err`); `Ok(None)` when the line is not complete yet.
fn line_end(data: &[u8], from: usize) -> Result<Option<usize>, ()> {
    let mut i = from;
    while i < data.len() {
        match data[i] {
            b'\r' => {
                return match data.get(i + 1) {
                    Some(b'\n') => Ok(Some(i)),
                    Some(_) => Err(()),
                    None => Ok(None),
                }
            }
            b'\n' => return Err(()),
            _ => i += 1,
        }
    }
    Ok(None)
}

enum Step {
    Done(Acted, usize),
    Incomplete,
    Refused,
    RefusedPartial,
}

pub fn reference(data: &[u8]) -> (Vec<Acted>, End) {
    let mut out = Vec::new();
    let mut p = 0;
    loop {
        if p == data.len() {
            return (out, End::Clean);
        }
        match one(data, p) {
            Step::Done(a, next) => {
                out.push(a);
                p = next;
            }
            Step::Incomplete => return (out, End::Incomplete),
            Step::Refused => return (out, End::Refused),
            Step::RefusedPartial => return (out, End::RefusedPartial),
        }
    }
}

fn one(data: &[u8], start: usize) -> Step {
    // RFC 9112 §2.2: empty lines before a request line are ignored.
    let mut p = start;
    while data[p..].starts_with(b"\r\n") {
        p += 2;
    }
    if p == data.len() || data[p..] == *b"\r" {
        return Step::Incomplete;
    }
    // The head: lines up to an empty one, all within MAX_HEAD bytes from `start`.
    let mut lines: Vec<&[u8]> = Vec::new();
    let mut q = p;
    let head_end = loop {
        match line_end(data, q) {
            Err(()) => return Step::RefusedPartial,
            Ok(None) => {
                return if data.len() - start > MAX_HEAD {
                    Step::Refused
                } else {
                    Step::Incomplete
                }
            }
            Ok(Some(e)) => {
                if e == q {
                    break e + 2;
                }
                lines.push(&data[q..e]);
                q = e + 2;
            }
        }
    };
    if head_end - start > MAX_HEAD || lines.len() > 65 {
        return Step::Refused;
    }
    // Request line: method SP target SP version.
    let parts: Vec<&[u8]> = lines[0].split(|&b| b == b' ').collect();
    let [method, target, version] = parts[..] else {
        return Step::Refused;
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Step::Refused;
    }
    if target.is_empty() || !target.iter().all(|&b| (0x21..=0x7e).contains(&b)) {
        return Step::Refused;
    }
    let minor = match version {
        b"HTTP/1.0" => 0,
        b"HTTP/1.1" => 1,
        _ => return Step::Refused,
    };
    // Fields: token ":" OWS value OWS, no folding.
    let mut hosts = 0;
    let mut lengths: Vec<&[u8]> = Vec::new();
    let mut codings: Option<Vec<Vec<u8>>> = None;
    for line in &lines[1..] {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Step::Refused;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Step::Refused;
        }
        if !value.iter().all(|&b| is_field_byte(b)) {
            return Step::Refused;
        }
        let value = value.trim_ascii();
        let name = name.to_ascii_lowercase();
        match &name[..] {
            b"host" => hosts += 1,
            b"content-length" => lengths.push(value),
            b"transfer-encoding" => {
                let list = codings.get_or_insert_with(Vec::new);
                for c in value.split(|&b| b == b',') {
                    list.push(c.trim_ascii().to_ascii_lowercase());
                }
            }
            _ => {}
        }
    }
    // RFC 9112 §3.2: one Host (on HTTP/1.1: exactly one).
    if hosts > 1 || (hosts == 0 && minor == 1) {
        return Step::Refused;
    }
    let method_s = String::from_utf8_lossy(method).to_string();
    let path = origin_path(target);
    let takes_body = method == b"POST" && path == "/api/events";
    // RFC 9112 §6.1–docs/protocol.md §6.3.
    enum Body {
        Length(usize),
        Chunked,
    }
    let body = if let Some(list) = codings {
        if minor == 0 || !lengths.is_empty() {
            return Step::Refused;
        }
        if list != [b"chunked".to_vec()] {
            return Step::Refused;
        }
        Body::Chunked
    } else if lengths.is_empty() {
        Body::Length(0)
    } else {
        let mut n: Option<u64> = None;
        for v in &lengths {
            if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
                return Step::Refused;
            }
            let x: u64 = std::str::from_utf8(v)
                .unwrap_or("x")
                .parse()
                .unwrap_or(u64::MAX);
            if n.is_some_and(|m| m != x) {
                return Step::Refused;
            }
            n = Some(x);
        }
        let n = n.unwrap_or(0);
        if n > MAX_BODY as u64 {
            if takes_body {
                return Step::Refused;
            }
            return Step::Refused;
        }
        Body::Length(n as usize)
    };
    match body {
        Body::Length(0) if !takes_body => Step::Done(
            Acted {
                method: method_s,
                path,
                body: Vec::new(),
            },
            head_end,
        ),
        _ if !takes_body => Step::Refused,
        Body::Length(n) => {
            if data.len() - head_end < n {
                return Step::Incomplete;
            }
            Step::Done(
                Acted {
                    method: method_s,
                    path,
                    body: data[head_end..head_end + n].to_vec(),
                },
                head_end + n,
            )
        }
        Body::Chunked => match chunked(data, head_end) {
            Ok(Some((body, next))) => Step::Done(
                Acted {
                    method: method_s,
                    path,
                    body,
                },
                next,
            ),
            Ok(None) => Step::Incomplete,
            Err(()) => Step::Refused,
        },
    }
}

/// `http://authority/path?query` → `/path`; `/path?query` → `/path`.
fn origin_path(target: &[u8]) -> String {
    let t = String::from_utf8_lossy(target).to_string();
    let lower = t.to_ascii_lowercase();
    let rest = if lower.starts_with("http://") {
        &t[7..]
    } else if lower.starts_with("https://") {
        &t[8..]
    } else {
        return t.split('?').next().unwrap_or("").to_string();
    };
    match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => {
            rest[i..].split('?').next().unwrap_or("").to_string()
        }
        _ => "/".to_string(),
    }
}

const MAX_LINE: usize = 1024;
const MAX_TRAILERS: usize = 8 * 1024;

/// A chunked body from `p`: Ok(Some(body, end)), Ok(None) if incomplete.
fn chunked(data: &[u8], mut p: usize) -> Result<Option<(Vec<u8>, usize)>, ()> {
    let mut body = Vec::new();
    loop {
        let Some(e) = line_end(data, p)? else {
            return if data.len() - p > MAX_LINE {
                Err(())
            } else {
                Ok(None)
            };
        };
        if e + 2 - p > MAX_LINE {
            return Err(());
        }
        let line = &data[p..e];
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        if digits == 0 {
            return Err(());
        }
        let ext = &line[digits..];
        if !ext.is_empty() {
            let ext = ext.trim_ascii_start();
            if ext.first() != Some(&b';')
                || ext.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
            {
                return Err(());
            }
        }
        let hex = &line[..digits];
        if hex.iter().skip_while(|&&b| b == b'0').count() > 15 {
            return Err(());
        }
        let size =
            u64::from_str_radix(std::str::from_utf8(hex).map_err(|_| ())?, 16).map_err(|_| ())?;
        if body.len() as u64 + size > MAX_BODY as u64 {
            return Err(());
        }
        p = e + 2;
        if size == 0 {
            break;
        }
        let size = size as usize;
        if data.len() - p < size {
            return Ok(None);
        }
        body.extend_from_slice(&data[p..p + size]);
        p += size;
        match data.get(p..p + 2) {
            Some(b"\r\n") => p += 2,
            Some(_) => return Err(()),
            None => {
                return match &data[p..] {
                    [] | [b'\r'] => Ok(None),
                    _ => Err(()),
                }
            }
        }
    }
    // Trailer fields, then an empty line.
    let mut trailer_bytes = 0;
    loop {
        let Some(e) = line_end(data, p)? else {
            return if data.len() - p > MAX_LINE {
                Err(())
            } else {
                Ok(None)
            };
        };
        if e + 2 - p > MAX_LINE {
            return Err(());
        }
        if e == p {
            return Ok(Some((body, e + 2)));
        }
        let line = &data[p..e];
        let colon = line.iter().position(|&b| b == b':').ok_or(())?;
        if colon == 0 || !line[..colon].iter().all(|&b| is_tchar(b)) {
            return Err(());
        }
        if line[colon + 1..]
            .iter()
            .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
        {
            return Err(());
        }
        trailer_bytes += e + 2 - p;
        if trailer_bytes > MAX_TRAILERS {
            return Err(());
        }
        p = e + 2;
    }
}

// ---------------------------------------------------------------------------
// A generator of plausible, often hostile, request sequences for the smoke run.

/// A small deterministic generator.
pub struct Gen(pub u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

/// One to four requests with framing headers drawn from the cases that
/// matter for smuggling, then sometimes a few byte-level mutations.
pub fn generate(g: &mut Gen) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..1 + g.below(4) {
        if g.below(8) == 0 {
            out.extend_from_slice(b"\r\n");
        }
        let method = g.pick(&["GET", "POST", "HEAD", "PUT", "G\x01T", "post"]);
        let target = g.pick(&[
            "/healthz",
            "/api/events",
            "/api/events?token=a",
            "/ws/dashboard/x",
            "http://h:1/api/events",
            "HTTPS://h?q",
            "/nope",
            "/caf\u{e9}",
            "*",
        ]);
        let version = g.pick(&["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1 "]);
        out.extend_from_slice(format!("{method} {target} {version}\r\n").as_bytes());
        for _ in 0..g.below(3) {
            out.extend_from_slice(
                g.pick(&["Host: h\r\n", "Host: h\r\n", "host:\r\n"])
                    .as_bytes(),
            );
        }
        let body: Vec<u8> = (0..g.below(40))
            .map(|i| b"{}[]\"ab:\r\n0;"[i % 12])
            .collect();
        let framing = g.below(10);
        let te = g.pick(&[
            "chunked",
            "Chunked",
            " chunked ",
            "gzip",
            "gzip, chunked",
            "chunked, chunked",
            "identity",
            "xchunked",
            "chunked,",
            "",
        ]);
        match framing {
            0 => {}
            1..=3 => {
                let cl = match g.below(6) {
                    0 => format!("{} ", body.len()),
                    1 => format!("+{}", body.len()),
                    2 => format!("{}, {}", body.len(), body.len()),
                    3 => format!("0{}", body.len()),
                    _ => body.len().to_string(),
                };
                out.extend_from_slice(format!("Content-Length: {cl}\r\n").as_bytes());
                if g.below(5) == 0 {
                    out.extend_from_slice(
                        format!("Content-Length: {}\r\n", g.below(50)).as_bytes(),
                    );
                }
            }
            4..=6 => out.extend_from_slice(format!("Transfer-Encoding: {te}\r\n").as_bytes()),
            _ => {
                out.extend_from_slice(format!("Transfer-Encoding: {te}\r\n").as_bytes());
                out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
            }
        }
        if g.below(4) == 0 {
            out.extend_from_slice(
                g.pick(&[
                    "X-A: b\r\n",
                    "X-A : b\r\n",
                    " folded\r\n",
                    "X-A: \x7f\r\n",
                    "X-B: \u{e9}\r\n",
                    "Expect: 100-continue\r\n",
                ])
                .as_bytes(),
            );
        }
        out.extend_from_slice(b"\r\n");
        if (4..=9).contains(&framing) {
            // A chunked body, well-formed or not.
            let mut rest = &body[..];
            while !rest.is_empty() {
                let n = 1 + g.below(rest.len());
                let ext = g.pick(&["", "", ";a=b", " ;x", ";\x01"]);
                let size = match g.below(10) {
                    0 => format!("0x{n:x}"),
                    1 => format!("{:x}", n + 1),
                    2 => format!("0000{n:X}"),
                    _ => format!("{n:x}"),
                };
                out.extend_from_slice(format!("{size}{ext}\r\n").as_bytes());
                out.extend_from_slice(&rest[..n]);
                out.extend_from_slice(g.pick(&["\r\n", "\r\n", "\r\n", "\n", ""]).as_bytes());
                rest = &rest[n..];
            }
            out.extend_from_slice(
                g.pick(&[
                    "0\r\n\r\n",
                    "0\r\n\r\n",
                    "0\r\nT: v\r\n\r\n",
                    "0\r\n",
                    "00\r\nbad\r\n\r\n",
                ])
                .as_bytes(),
            );
        } else {
            out.extend_from_slice(&body);
        }
    }
    for _ in 0..g.below(3) {
        if out.is_empty() {
            break;
        }
        let i = g.below(out.len());
        match g.below(4) {
            0 => out[i] = b'\n',
            1 => out.insert(i, b'\r'),
            2 => {
                out.remove(i);
            }
            _ => out[i] ^= 1 << g.below(8),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_examples() {
        let two = b"POST /api/events HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n";
        let (a, e) = reference(two);
        assert_eq!((a.len(), e), (2, End::Clean));
        let smuggle = b"GET /healthz HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nGET /";
        assert_eq!(reference(smuggle), (vec![], End::Refused));
        check(two);
        check(smuggle);
    }

    #[test]
    fn generated_sequences_agree() {
        let mut g = Gen(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            check(&generate(&mut g));
        }
    }
}
