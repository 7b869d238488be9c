//! Sans-io parser for the PROXY protocol header, versions 1 (text) and 2
//! (binary), that a load balancer puts before the first request of a
//! connection (docs/protocol.md §11; the format is HAProxy's
//! `proxy-protocol.txt`).
//!
//! The caller appends bytes as they arrive and calls [`parse`] again on
//! everything received so far, exactly like `http::head::parse_head`:
//!
//! - `Ok(Partial { at_most })`: not decided yet. Within `at_most` more bytes
//!   the answer is `Complete` or an error, so the caller never needs to
//!   buffer more than `buf.len() + at_most` bytes for the header (and may read
//!   no more than that if it wants to leave the request in the socket).
//!   A connection that ends, or times out, while `Partial` has sent a
//!   truncated header.
//! - `Ok(Complete { header, len })`: the header is the first `len` bytes; the
//!   request that follows starts at `buf[len]` and is not looked at.
//! - `Err(ProxyError)`: not a valid header. Every error means the same thing
//!   to the caller: close the connection without an answer (docs/protocol.md §11).
//!
//! Every answer depends only on the bytes it needed: an error or a complete
//! header found in a prefix of the input is the answer for the whole input,
//! so however the bytes are cut into reads the outcome is the same, and bytes
//! after a complete header never change it. The fixed parts (signature, v1
//! protocol word, v2 version, command, family and length) are judged as soon
//! as their bytes arrive, so a stranger is turned away at once, as the
//! specification recommends; v1 addresses are read once the CRLF is there.
//!
//! # Choices the specification leaves to the receiver
//!
//! - Both versions are accepted on the same listener; the first byte tells
//!   them apart (`P` or `\r`).
//! - v1 `UNKNOWN`, v2 `LOCAL`, and v2 headers whose family or transport is
//!   `UNSPEC`, UDP or `AF_UNIX` are accepted and carry no client address the
//!   server can use ([`ProxyHeader::client`] is `None`): the caller uses the
//!   peer's own address. The specification lets a receiver fall back to this
//!   "UNSPEC mode" for any valid combination it does not implement; refusing
//!   them would turn a proxy's health check or an odd listener into an outage.
//!   UDP addresses are still decoded ([`Addresses::Udp`]), `AF_UNIX` paths are
//!   not.
//! - `LOCAL` discards the whole address block unread (family byte included),
//!   as the specification says; its TLVs are not parsed.
//! - With an `UNSPEC` family or transport the address block has no defined
//!   layout, so the whole block is skipped and no TLV is parsed either.
//! - TLVs are checked to lie within the header. `PP2_TYPE_AUTHORITY` is
//!   exposed (UTF-8, at most 255 bytes); a `PP2_TYPE_CRC32C` is verified
//!   (the specification requires it of a receiver that supports it); a
//!   repeated authority or checksum is refused as ambiguous; every other type
//!   is skipped ([`ProxyHeader::tlvs`] walks them all).
//! - A v2 header longer than the caller's limit ([`DEFAULT_MAX_LEN`]) is
//!   refused as soon as its length field arrives. v1 lines are limited to 107
//!   bytes by the specification.
//! - v1 addresses are parsed by `std::net` (IPv4 refuses leading zeros;
//!   IPv6 accepts the compressed and IPv4-suffixed forms `inet_ntop` writes);
//!   ports are 0..=65535 in decimal without leading zeros or sign.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;

/// The longest v1 line, CRLF included ("PROXY UNKNOWN" with two full IPv6
/// addresses and ports): no CRLF within this many bytes is an error.
pub const V1_MAX_LEN: usize = 107;
/// The fixed part of a v2 header: signature, version/command, family, length.
pub const V2_FIXED_LEN: usize = 16;
/// The longest v2 header the format can express (16-bit length field).
pub const V2_MAX_LEN: usize = V2_FIXED_LEN + u16::MAX as usize;
/// A limit for v2 headers that holds every real sender with room to spare:
/// IPv6 addresses (36 bytes) plus HAProxy's TLVs (authority ≤ 255, unique id
/// ≤ 128, ALPN, the SSL block with cipher and client CN, checksum) come to
/// well under 1 KiB; cloud load balancers send less.
pub const DEFAULT_MAX_LEN: usize = 4096;

/// The first 12 bytes of every v2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// `PP2_TYPE_AUTHORITY`: the host name the client asked for (TLS SNI).
pub const PP2_TYPE_AUTHORITY: u8 = 0x02;
/// `PP2_TYPE_CRC32C`: checksum of the whole header, this field zeroed.
pub const PP2_TYPE_CRC32C: u8 = 0x03;

/// The longest authority accepted: a DNS name is at most 255 bytes.
const MAX_AUTHORITY_LEN: usize = 255;

/// What [`parse`] made of the bytes so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyStatus {
    /// Need more bytes: within `at_most` more the answer is decided (≥ 1).
    Partial { at_most: usize },
    /// The header is `buf[..len]`; the connection's own bytes start at `len`.
    Complete { header: ProxyHeader, len: usize },
}

/// A complete, valid header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyHeader {
    pub version: Version,
    pub command: Command,
    pub addresses: Addresses,
    /// `PP2_TYPE_AUTHORITY` of a v2 `PROXY` header, for logs.
    pub authority: Option<String>,
    /// Where the TLVs lie in the buffer given to [`parse`] (empty for v1,
    /// `LOCAL` and unspecified families), for [`ProxyHeader::tlvs`].
    pub tlv_range: Range<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Relayed on behalf of a client (v1 `TCP4`/`TCP6`, v2 `PROXY`).
    Proxy,
    /// v2 `LOCAL`: the proxy's own connection, e.g. a health check.
    Local,
    /// v1 `UNKNOWN`: the proxy could not fill the line.
    Unknown,
}

/// The addresses a header names. Only [`Addresses::Tcp`] gives the server a
/// client address; for every other kind the caller uses the peer's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addresses {
    /// TCP over IPv4 or IPv6: `source` is the client, `destination` the
    /// address the client connected to.
    Tcp {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// v2 UDP over IPv4 or IPv6: decoded, but not a client of this server.
    Udp {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// v2 `AF_UNIX`: the 108-byte paths are not decoded.
    Unix,
    /// No address: v1 `UNKNOWN`, v2 `LOCAL`, or an `UNSPEC` family or
    /// transport.
    Unspecified,
}

/// Why bytes are not a valid PROXY header. The caller's answer is the same for
/// each: close the connection without a reply (docs/protocol.md §11); the
/// variant is for the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("no PROXY protocol signature")]
    WrongSignature,
    #[error("PROXY v1: protocol is not TCP4, TCP6 or UNKNOWN")]
    V1Protocol,
    #[error("PROXY v1: CR or LF outside the closing CRLF")]
    V1LineEnd,
    #[error("PROXY v1: no CRLF within {V1_MAX_LEN} bytes")]
    V1TooLong,
    #[error("PROXY v1: wrong number of fields or spaces")]
    V1Fields,
    #[error("PROXY v1: address is not one of its family")]
    V1Address,
    #[error("PROXY v1: port is not 0..=65535 in decimal without leading zeros")]
    V1Port,
    #[error("PROXY v2: version {0}, only 2 exists")]
    V2Version(u8),
    #[error("PROXY v2: command {0} is neither LOCAL (0) nor PROXY (1)")]
    V2Command(u8),
    #[error("PROXY v2: unassigned family/transport byte {0:#04x}")]
    V2Family(u8),
    #[error("PROXY v2: header of {len} bytes is past the limit of {max}")]
    V2TooLong { len: usize, max: usize },
    #[error("PROXY v2: address block of {got} bytes, the family needs {needs}")]
    V2AddressesShort { needs: usize, got: usize },
    #[error("PROXY v2: a TLV runs past the end of the header")]
    V2TlvOverrun,
    #[error("PROXY v2: TLV {0:#04x} appears twice")]
    V2TlvRepeated(u8),
    #[error("PROXY v2: TLV {0:#04x} has a malformed value")]
    V2TlvValue(u8),
    #[error("PROXY v2: CRC32c does not match the header")]
    V2Checksum,
}

impl ProxyHeader {
    /// The client address to use for logs, limits and metrics, or `None` when
    /// the caller must use the peer's own address.
    pub fn client(&self) -> Option<SocketAddr> {
        match self.addresses {
            Addresses::Tcp { source, .. } => Some(source),
            _ => None,
        }
    }

    /// Every TLV of the header, in order; `buf` is the buffer given to
    /// [`parse`] (at least its first `len` bytes), before it is drained.
    pub fn tlvs<'a>(&self, buf: &'a [u8]) -> Tlvs<'a> {
        Tlvs {
            rest: buf.get(self.tlv_range.clone()).unwrap_or(&[]),
        }
    }
}

/// One type-length-value entry of a v2 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    pub kind: u8,
    pub value: &'a [u8],
}

/// Iterator over the TLVs of a parsed header (see [`ProxyHeader::tlvs`]).
#[derive(Debug, Clone)]
pub struct Tlvs<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Tlvs<'a> {
    type Item = Tlv<'a>;

    fn next(&mut self) -> Option<Tlv<'a>> {
        // `parse` has checked that the TLVs tile the range; a foreign buffer
        // simply ends the walk.
        match split_tlv(self.rest) {
            Ok(Some((tlv, rest))) => {
                self.rest = rest;
                Some(tlv)
            }
            _ => {
                self.rest = &[];
                None
            }
        }
    }
}

/// Parses the PROXY header at the start of `buf` (everything received on the
/// connection so far). `max_len` bounds a v2 header; [`DEFAULT_MAX_LEN`] suits
/// every known sender. See the module docs for the three answers.
pub fn parse(buf: &[u8], max_len: usize) -> Result<ProxyStatus, ProxyError> {
    match buf.first() {
        None => Ok(ProxyStatus::Partial {
            at_most: V1_MAX_LEN.max(v2_bound(max_len)),
        }),
        Some(b'P') => parse_v1(buf),
        Some(b'\r') => parse_v2(buf, max_len),
        Some(_) => Err(ProxyError::WrongSignature),
    }
}

/// How long a v2 header can be before its length field is read.
fn v2_bound(max_len: usize) -> usize {
    max_len.clamp(V2_FIXED_LEN, V2_MAX_LEN)
}

// ---------------------------------------------------------------- version 1

/// Everything a v1 line may start with; the space or CR after the protocol is
/// part of it so that `TCP44` or `UNKNOWNX` are refused early.
const V1_STARTS: [&[u8]; 4] = [
    b"PROXY TCP4 ",
    b"PROXY TCP6 ",
    b"PROXY UNKNOWN ",
    b"PROXY UNKNOWN\r",
];

fn parse_v1(buf: &[u8]) -> Result<ProxyStatus, ProxyError> {
    let compatible = |start: &[u8]| {
        let n = start.len().min(buf.len());
        start[..n] == buf[..n]
    };
    if !compatible(b"PROXY ") {
        return Err(ProxyError::WrongSignature);
    }
    if !V1_STARTS.iter().any(|s| compatible(s)) {
        return Err(ProxyError::V1Protocol);
    }
    let Some(len) = v1_line_end(buf)? else {
        return Ok(ProxyStatus::Partial {
            at_most: V1_MAX_LEN - buf.len(),
        });
    };
    let header = parse_v1_line(&buf[..len - 2])?;
    Ok(ProxyStatus::Complete { header, len })
}

/// The length of the line through its CRLF, `None` if it may still come.
/// Scans left to right and stops at the first CR or LF, so a prefix that
/// decides the answer decides it for any longer input too.
fn v1_line_end(buf: &[u8]) -> Result<Option<usize>, ProxyError> {
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    for (i, &b) in window.iter().enumerate() {
        match b {
            b'\n' => return Err(ProxyError::V1LineEnd),
            b'\r' if i + 2 > V1_MAX_LEN => return Err(ProxyError::V1TooLong),
            b'\r' => {
                return match buf.get(i + 1) {
                    None => Ok(None),
                    Some(b'\n') => Ok(Some(i + 2)),
                    Some(_) => Err(ProxyError::V1LineEnd),
                }
            }
            _ => {}
        }
    }
    if buf.len() >= V1_MAX_LEN {
        Err(ProxyError::V1TooLong)
    } else {
        Ok(None)
    }
}

/// Parses a v1 line without its CRLF.
fn parse_v1_line(line: &[u8]) -> Result<ProxyHeader, ProxyError> {
    let mut fields = line.split(|&b| b == b' ');
    let (Some(b"PROXY"), Some(protocol)) = (fields.next(), fields.next()) else {
        return Err(ProxyError::V1Protocol);
    };
    let header = |command, addresses| ProxyHeader {
        version: Version::V1,
        command,
        addresses,
        authority: None,
        tlv_range: 0..0,
    };
    let v6 = match protocol {
        b"TCP4" => false,
        b"TCP6" => true,
        // "the receiver must ignore anything presented before the CRLF".
        b"UNKNOWN" => return Ok(header(Command::Unknown, Addresses::Unspecified)),
        _ => return Err(ProxyError::V1Protocol),
    };
    let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(ProxyError::V1Fields);
    };
    let (src, dst) = (v1_address(src, v6)?, v1_address(dst, v6)?);
    let (sport, dport) = (v1_port(sport)?, v1_port(dport)?);
    Ok(header(
        Command::Proxy,
        Addresses::Tcp {
            source: SocketAddr::new(src, sport),
            destination: SocketAddr::new(dst, dport),
        },
    ))
}

fn v1_address(field: &[u8], v6: bool) -> Result<IpAddr, ProxyError> {
    if field.is_empty() {
        return Err(ProxyError::V1Fields);
    }
    let text = std::str::from_utf8(field).map_err(|_| ProxyError::V1Address)?;
    let ip = if v6 {
        text.parse::<Ipv6Addr>().map(IpAddr::V6)
    } else {
        text.parse::<Ipv4Addr>().map(IpAddr::V4)
    };
    ip.map_err(|_| ProxyError::V1Address)
}

/// A decimal port without sign or leading zeros (octal confusion, says the
/// specification), which `u16::from_str` would both accept.
fn v1_port(field: &[u8]) -> Result<u16, ProxyError> {
    match field {
        [] => Err(ProxyError::V1Fields),
        [b'0'] => Ok(0),
        [b'1'..=b'9', rest @ ..] if rest.len() < 5 && rest.iter().all(u8::is_ascii_digit) => {
            let n = field.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
            u16::try_from(n).map_err(|_| ProxyError::V1Port)
        }
        _ => Err(ProxyError::V1Port),
    }
}

// ---------------------------------------------------------------- version 2

fn parse_v2(buf: &[u8], max_len: usize) -> Result<ProxyStatus, ProxyError> {
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] != V2_SIGNATURE[..n] {
        return Err(ProxyError::WrongSignature);
    }
    // Each byte of the fixed part is judged as soon as it is there.
    let command = match buf.get(12) {
        None => None,
        Some(&b) if b >> 4 != 2 => return Err(ProxyError::V2Version(b >> 4)),
        Some(&b) => match b & 0x0f {
            0 => Some(Command::Local),
            1 => Some(Command::Proxy),
            c => return Err(ProxyError::V2Command(c)),
        },
    };
    // LOCAL ignores the family byte altogether.
    if let (Some(Command::Proxy), Some(&fam)) = (command, buf.get(13)) {
        if fam >> 4 > 3 || fam & 0x0f > 2 {
            return Err(ProxyError::V2Family(fam));
        }
    }
    let (Some(command), Some(&fam), Some(len_field)) = (command, buf.get(13), buf.get(14..16))
    else {
        return Ok(ProxyStatus::Partial {
            at_most: v2_bound(max_len) - buf.len(),
        });
    };
    let len = V2_FIXED_LEN + usize::from(u16::from_be_bytes([len_field[0], len_field[1]]));
    if len > max_len {
        return Err(ProxyError::V2TooLong { len, max: max_len });
    }
    if buf.len() < len {
        return Ok(ProxyStatus::Partial {
            at_most: len - buf.len(),
        });
    }
    let header = &buf[..len];
    let mut parsed = ProxyHeader {
        version: Version::V2,
        command,
        addresses: Addresses::Unspecified,
        authority: None,
        tlv_range: len..len,
    };
    if command == Command::Local {
        return Ok(ProxyStatus::Complete {
            header: parsed,
            len,
        });
    }
    let block = &header[V2_FIXED_LEN..];
    let needs = match (fam >> 4, fam & 0x0f) {
        (0, _) | (_, 0) => {
            return Ok(ProxyStatus::Complete {
                header: parsed,
                len,
            })
        }
        (1, _) => 12,
        (2, _) => 36,
        _ => 216,
    };
    if block.len() < needs {
        return Err(ProxyError::V2AddressesShort {
            needs,
            got: block.len(),
        });
    }
    parsed.addresses = v2_addresses(fam, &block[..needs]);
    parsed.tlv_range = V2_FIXED_LEN + needs..len;
    parsed.authority = check_tlvs(header, parsed.tlv_range.start)?;
    Ok(ProxyStatus::Complete {
        header: parsed,
        len,
    })
}

/// Decodes an address block of exactly the family's length.
fn v2_addresses(fam: u8, block: &[u8]) -> Addresses {
    let ips = match block.len() {
        12 => {
            let ip =
                |at: usize| IpAddr::from([block[at], block[at + 1], block[at + 2], block[at + 3]]);
            (ip(0), ip(4))
        }
        36 => {
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&block[at..at + 16]);
                IpAddr::from(octets)
            };
            (ip(0), ip(16))
        }
        _ => return Addresses::Unix,
    };
    let ports = &block[block.len() - 4..];
    let source = SocketAddr::new(ips.0, u16::from_be_bytes([ports[0], ports[1]]));
    let destination = SocketAddr::new(ips.1, u16::from_be_bytes([ports[2], ports[3]]));
    if fam & 0x0f == 1 {
        Addresses::Tcp {
            source,
            destination,
        }
    } else {
        Addresses::Udp {
            source,
            destination,
        }
    }
}

/// Splits the first TLV off `rest`: `None` at the end, an error when the TLV
/// does not fit.
fn split_tlv(rest: &[u8]) -> Result<Option<(Tlv<'_>, &[u8])>, ProxyError> {
    let [kind, hi, lo, tail @ ..] = rest else {
        return if rest.is_empty() {
            Ok(None)
        } else {
            Err(ProxyError::V2TlvOverrun)
        };
    };
    let n = usize::from(u16::from_be_bytes([*hi, *lo]));
    if tail.len() < n {
        return Err(ProxyError::V2TlvOverrun);
    }
    let (value, rest) = tail.split_at(n);
    Ok(Some((Tlv { kind: *kind, value }, rest)))
}

/// Checks that the TLVs from `start` tile the rest of `header`, verifies a
/// checksum, and returns the authority.
fn check_tlvs(header: &[u8], start: usize) -> Result<Option<String>, ProxyError> {
    let mut authority = None;
    let mut crc_at = None;
    let mut rest = &header[start..];
    while let Some((tlv, tail)) = split_tlv(rest)? {
        let value_at = header.len() - tail.len() - tlv.value.len();
        rest = tail;
        match tlv.kind {
            PP2_TYPE_AUTHORITY => {
                if authority.is_some() {
                    return Err(ProxyError::V2TlvRepeated(tlv.kind));
                }
                let name = std::str::from_utf8(tlv.value)
                    .ok()
                    .filter(|s| s.len() <= MAX_AUTHORITY_LEN)
                    .ok_or(ProxyError::V2TlvValue(tlv.kind))?;
                authority = Some(name.to_owned());
            }
            PP2_TYPE_CRC32C => {
                if crc_at.is_some() {
                    return Err(ProxyError::V2TlvRepeated(tlv.kind));
                }
                if tlv.value.len() != 4 {
                    return Err(ProxyError::V2TlvValue(tlv.kind));
                }
                crc_at = Some(value_at);
            }
            _ => {}
        }
    }
    if let Some(at) = crc_at {
        let sent = u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
        let crc = crc32c(&[&header[..at], &[0; 4], &header[at + 4..]]);
        if crc != sent {
            return Err(ProxyError::V2Checksum);
        }
    }
    Ok(authority)
}

/// CRC-32C (Castagnoli, reflected, RFC 4960 appendix B) over the pieces in
/// order. Bitwise: it runs once per connection over a few hundred bytes.
fn crc32c(pieces: &[&[u8]]) -> u32 {
    let mut crc = !0u32;
    for &b in pieces.iter().flat_map(|p| p.iter()) {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = DEFAULT_MAX_LEN;

    fn v2(ver_cmd: u8, fam: u8, block: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(ver_cmd);
        h.push(fam);
        h.extend_from_slice(&u16::try_from(block.len()).unwrap().to_be_bytes());
        h.extend_from_slice(block);
        h
    }

    fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
        let mut t = vec![kind];
        t.extend_from_slice(&u16::try_from(value.len()).unwrap().to_be_bytes());
        t.extend_from_slice(value);
        t
    }

    fn tcp4_block() -> Vec<u8> {
        let mut b = vec![192, 168, 0, 1, 10, 0, 0, 7];
        b.extend_from_slice(&56324u16.to_be_bytes());
        b.extend_from_slice(&443u16.to_be_bytes());
        b
    }

    fn sock(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn tcp(src: &str, dst: &str) -> Addresses {
        Addresses::Tcp {
            source: sock(src),
            destination: sock(dst),
        }
    }

    /// A valid header: every proper prefix is `Partial` with an honest bound,
    /// the whole is `Complete` with `len` = the header, and any bytes after it
    /// (a request) change nothing.
    #[track_caller]
    fn complete(h: &[u8]) -> ProxyHeader {
        for k in 0..h.len() {
            match parse(&h[..k], MAX) {
                Ok(ProxyStatus::Partial { at_most }) => {
                    assert!(at_most >= 1, "prefix {k}: at_most 0");
                    assert!(
                        k + at_most >= h.len(),
                        "prefix {k}: at_most {at_most} too small"
                    );
                }
                other => panic!("prefix {k} of {:?}: {other:?}", String::from_utf8_lossy(h)),
            }
        }
        let Ok(ProxyStatus::Complete { header, len }) = parse(h, MAX) else {
            panic!("{:?}: {:?}", String::from_utf8_lossy(h), parse(h, MAX));
        };
        assert_eq!(len, h.len());
        let mut more = h.to_vec();
        more.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(
            parse(&more, MAX),
            Ok(ProxyStatus::Complete {
                header: header.clone(),
                len
            })
        );
        header
    }

    /// An invalid header: the error, and every prefix is either `Partial` or
    /// the same error (never `Complete`, never another error).
    #[track_caller]
    fn refused(h: &[u8]) -> ProxyError {
        refused_with(h, MAX)
    }

    #[track_caller]
    fn refused_with(h: &[u8], max: usize) -> ProxyError {
        let Err(e) = parse(h, max) else {
            panic!(
                "{:?} parsed as {:?}",
                String::from_utf8_lossy(h),
                parse(h, max)
            );
        };
        for k in 0..h.len() {
            match parse(&h[..k], max) {
                Ok(ProxyStatus::Partial { at_most }) => assert!(k + at_most >= 1),
                Err(e2) => assert_eq!(e2, e, "prefix {k}"),
                other => panic!("prefix {k}: {other:?}"),
            }
        }
        let mut more = h.to_vec();
        more.extend_from_slice(b"\r\n\r\nGET / HTTP/1.1\r\n");
        assert_eq!(parse(&more, max), Err(e), "with bytes appended");
        e
    }

    #[test]
    fn v1_tcp4_leaves_the_request_alone() {
        let line = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
        let h = complete(line);
        assert_eq!(h.version, Version::V1);
        assert_eq!(h.command, Command::Proxy);
        assert_eq!(h.addresses, tcp("192.168.0.1:56324", "192.168.0.11:443"));
        assert_eq!(h.client(), Some(sock("192.168.0.1:56324")));
        assert_eq!(h.authority, None);
        assert_eq!(h.tlvs(line).count(), 0);

        let mut buf = line.to_vec();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let Ok(ProxyStatus::Complete { len, .. }) = parse(&buf, MAX) else {
            panic!()
        };
        assert_eq!(&buf[len..], b"GET / HTTP/1.1\r\n\r\n");
        // Even a second PROXY line right after is the connection's business.
        let twice = [&line[..], &line[..]].concat();
        assert_eq!(
            parse(&twice, MAX)
                .map(|s| matches!(s, ProxyStatus::Complete { len, .. } if len == line.len())),
            Ok(true)
        );
    }

    #[test]
    fn v1_tcp6_forms() {
        let h = complete(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n");
        assert_eq!(h.addresses, tcp("[2001:db8::1]:1", "[2001:db8::2]:65535"));
        let h = complete(b"PROXY TCP6 ::ffff:10.0.0.1 ::1 0 80\r\n");
        assert_eq!(h.addresses, tcp("[::ffff:10.0.0.1]:0", "[::1]:80"));
        // The longest TCP6 line the specification names: 104 bytes.
        let full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let line = format!("PROXY TCP6 {full} {full} 65535 65535\r\n");
        assert_eq!(line.len(), 104);
        let h = complete(line.as_bytes());
        assert_eq!(h.client().map(|a| a.port()), Some(65535));
        let h = complete(b"PROXY TCP6 FFFF:0DB8:0000:0000:0000:0000:0000:0001 ::2 443 8000\r\n");
        assert_eq!(h.client(), Some(sock("[ffff:db8::1]:443")));
    }

    #[test]
    fn v1_unknown_uses_the_peer() {
        for line in [
            &b"PROXY UNKNOWN\r\n"[..],
            b"PROXY UNKNOWN ffff:: ffff:: 1 2\r\n",
            b"PROXY UNKNOWN whatever \x01\xff the sender puts here\r\n",
            b"PROXY UNKNOWN \r\n",
        ] {
            let h = complete(line);
            assert_eq!((h.version, h.command), (Version::V1, Command::Unknown));
            assert_eq!(h.addresses, Addresses::Unspecified);
            assert_eq!(h.client(), None);
        }
        // The worst case of the specification: exactly 107 bytes.
        let full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let line = format!("PROXY UNKNOWN {full} {full} 65535 65535\r\n");
        assert_eq!(line.len(), V1_MAX_LEN);
        assert_eq!(complete(line.as_bytes()).command, Command::Unknown);
    }

    #[test]
    fn v1_longer_than_107_bytes() {
        let full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let line = format!("PROXY UNKNOWN {full} {full} 65535 655350\r\n");
        assert_eq!(line.len(), 108);
        assert_eq!(refused(line.as_bytes()), ProxyError::V1TooLong);
        // Decided at 107 bytes, without waiting for a CRLF that cannot fit.
        assert_eq!(
            parse(&line.as_bytes()[..107], MAX),
            Err(ProxyError::V1TooLong)
        );
        assert_eq!(
            parse(&line.as_bytes()[..106], MAX),
            Ok(ProxyStatus::Partial { at_most: 1 })
        );
        let endless = [&b"PROXY UNKNOWN "[..], &[b'a'; 200]].concat();
        assert_eq!(refused(&endless), ProxyError::V1TooLong);
        let tcp = format!("PROXY TCP4 1.2.3.4 5.6.7.8 1 2{}\r\n", " ".repeat(80));
        assert_eq!(refused(tcp.as_bytes()), ProxyError::V1TooLong);
    }

    #[test]
    fn v1_ports() {
        let port = |p: &str| {
            parse(
                format!("PROXY TCP4 1.2.3.4 5.6.7.8 {p} 80\r\n").as_bytes(),
                MAX,
            )
        };
        for ok in ["0", "1", "80", "65535", "10000"] {
            assert!(matches!(port(ok), Ok(ProxyStatus::Complete { .. })), "{ok}");
        }
        for bad in [
            "65536", "99999", "100000", "00", "080", "0080", "+80", "-1", "8o", "1e3", "0x50",
        ] {
            assert_eq!(
                refused(format!("PROXY TCP4 1.2.3.4 5.6.7.8 {bad} 80\r\n").as_bytes()),
                ProxyError::V1Port,
                "{bad}"
            );
            assert_eq!(
                refused(format!("PROXY TCP4 1.2.3.4 5.6.7.8 80 {bad}\r\n").as_bytes()),
                ProxyError::V1Port,
                "{bad}"
            );
        }
    }

    #[test]
    fn v1_addresses() {
        for bad in [
            "010.0.0.1",
            "1.2.3",
            "1.2.3.4.5",
            "256.0.0.1",
            "1.2.3.4/8",
            "::1",
            "1.2.3.-4",
            " 1.2.3.4",
        ] {
            let line = format!("PROXY TCP4 {bad} 5.6.7.8 1 2\r\n");
            let e = refused(line.as_bytes());
            assert!(
                matches!(e, ProxyError::V1Address | ProxyError::V1Fields),
                "{bad}: {e:?}"
            );
        }
        for bad in [
            "1.2.3.4",
            "2001:db8:::1",
            "2001:db8::1%eth0",
            "[::1]",
            "1:2:3:4:5:6:7:8:9",
            "12345::",
        ] {
            let line = format!("PROXY TCP6 ::1 {bad} 1 2\r\n");
            assert_eq!(refused(line.as_bytes()), ProxyError::V1Address, "{bad}");
        }
        assert_eq!(
            refused(b"PROXY TCP4 1.2.3.\xff 5.6.7.8 1 2\r\n"),
            ProxyError::V1Address
        );
    }

    #[test]
    fn v1_fields_and_spaces() {
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
            b"PROXY TCP4 \r\n",
        ] {
            assert_eq!(
                refused(bad),
                ProxyError::V1Fields,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            refused(b"PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n"),
            ProxyError::V1Fields
        );
    }

    #[test]
    fn v1_protocol_word_is_checked_early() {
        for bad in [
            &b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n"[..],
            b"PROXY TCP44 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY UNKNOWNX\r\n",
            b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY \r\n",
            b"PROXY TCP4\r\n",
        ] {
            assert_eq!(
                refused(bad),
                ProxyError::V1Protocol,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(parse(b"PROXY TCP5", MAX), Err(ProxyError::V1Protocol));
        assert_eq!(parse(b"PROXY X", MAX), Err(ProxyError::V1Protocol));
    }

    #[test]
    fn v1_needs_crlf() {
        assert_eq!(
            refused(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"),
            ProxyError::V1LineEnd
        );
        assert_eq!(
            refused(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rGET"),
            ProxyError::V1LineEnd
        );
        assert_eq!(
            refused(b"PROXY TCP4 1.2.3.4\n5.6.7.8 1 2\r\n"),
            ProxyError::V1LineEnd
        );
        assert_eq!(refused(b"PROXY UNKNOWN x\n\r\n"), ProxyError::V1LineEnd);
        assert_eq!(refused(b"PROXY UNKNOWN x\r\r\n"), ProxyError::V1LineEnd);
        // A CR at the end of what has arrived may still be followed by LF.
        assert_eq!(
            parse(b"PROXY UNKNOWN\r", MAX),
            Ok(ProxyStatus::Partial {
                at_most: V1_MAX_LEN - 14
            })
        );
    }

    #[test]
    fn wrong_signature_at_the_first_wrong_byte() {
        for bad in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"\x16\x03\x01\x02\x00\x01",
            b"PROXX TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x0c",
            b"\r\n\r\n\x00\r\n\r",
            b"\r\nGET / HTTP/1.1\r\n",
            b"\x00",
        ] {
            assert_eq!(
                refused(bad),
                ProxyError::WrongSignature,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(parse(b"G", MAX), Err(ProxyError::WrongSignature));
        assert_eq!(parse(b"PR0", MAX), Err(ProxyError::WrongSignature));
        assert_eq!(parse(b"\r\r", MAX), Err(ProxyError::WrongSignature));
    }

    #[test]
    fn v2_tcp4_and_tcp6() {
        let h = v2(0x21, 0x11, &tcp4_block());
        let header = complete(&h);
        assert_eq!(
            (header.version, header.command),
            (Version::V2, Command::Proxy)
        );
        assert_eq!(header.addresses, tcp("192.168.0.1:56324", "10.0.0.7:443"));
        assert_eq!(header.tlv_range, 28..28);

        let mut block = Vec::new();
        block.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        block.extend_from_slice(&"::ffff:10.1.2.3".parse::<Ipv6Addr>().unwrap().octets());
        block.extend_from_slice(&[0xff, 0xff, 0, 80]);
        let header = complete(&v2(0x21, 0x21, &block));
        assert_eq!(
            header.addresses,
            tcp("[2001:db8::1]:65535", "[::ffff:10.1.2.3]:80")
        );
        assert_eq!(header.client(), Some(sock("[2001:db8::1]:65535")));
    }

    #[test]
    fn v2_request_right_after() {
        let mut buf = v2(0x21, 0x11, &tcp4_block());
        let n = buf.len();
        buf.extend_from_slice(b"GET /ws/all HTTP/1.1\r\n");
        let Ok(ProxyStatus::Complete { len, .. }) = parse(&buf, MAX) else {
            panic!()
        };
        assert_eq!(len, n);
        assert_eq!(&buf[len..], b"GET /ws/all HTTP/1.1\r\n");
    }

    #[test]
    fn v2_local_discards_the_block() {
        let h = complete(&v2(0x20, 0x00, &[]));
        assert_eq!(
            (h.command, h.addresses.clone(), h.client()),
            (Command::Local, Addresses::Unspecified, None)
        );
        // "must not assume zero is presented for LOCAL": any block, any family
        // byte, even an unassigned one, is skipped unread.
        let h = complete(&v2(0x20, 0xff, &[1, 2, 3, 4, 5]));
        assert_eq!(
            (h.command, h.addresses, h.tlv_range),
            (Command::Local, Addresses::Unspecified, 21..21)
        );
        let h = complete(&v2(0x20, 0x11, &tcp4_block()));
        assert_eq!(h.addresses, Addresses::Unspecified);
    }

    #[test]
    fn v2_families_without_a_client_address() {
        // AF_UNSPEC or transport UNSPEC: the block has no layout, skipped.
        for fam in [0x00, 0x01, 0x02, 0x10, 0x20, 0x30] {
            let h = complete(&v2(0x21, fam, &[9; 7]));
            assert_eq!(
                (h.command, h.addresses, h.tlv_range),
                (Command::Proxy, Addresses::Unspecified, 23..23),
                "{fam:#x}"
            );
        }
        // UDP is decoded but is no client of a TCP server.
        let h = complete(&v2(0x21, 0x12, &tcp4_block()));
        assert_eq!(
            h.addresses,
            Addresses::Udp {
                source: sock("192.168.0.1:56324"),
                destination: sock("10.0.0.7:443")
            }
        );
        assert_eq!(h.client(), None);
        let h = complete(&v2(0x21, 0x22, &[0; 36]));
        assert!(matches!(h.addresses, Addresses::Udp { .. }));
        // AF_UNIX, stream or datagram: 2 × 108 bytes, then TLVs.
        for fam in [0x31, 0x32] {
            let mut block = vec![b'/'; 216];
            block.extend(tlv(PP2_TYPE_AUTHORITY, b"bi.example"));
            let h = complete(&v2(0x21, fam, &block));
            assert_eq!((h.client(), &h.addresses), (None, &Addresses::Unix));
            assert_eq!(h.authority.as_deref(), Some("bi.example"));
        }
    }

    #[test]
    fn v2_unassigned_bytes_are_refused_early() {
        let fixed = |ver_cmd, fam| v2(ver_cmd, fam, &tcp4_block());
        for (ver_cmd, e) in [
            (0x11, ProxyError::V2Version(1)),
            (0x01, ProxyError::V2Version(0)),
            (0x31, ProxyError::V2Version(3)),
            (0xf1, ProxyError::V2Version(15)),
            (0x22, ProxyError::V2Command(2)),
            (0x2f, ProxyError::V2Command(15)),
        ] {
            let h = fixed(ver_cmd, 0x11);
            assert_eq!(refused(&h), e);
            assert_eq!(parse(&h[..13], MAX), Err(e), "decided by byte 13");
        }
        for fam in [0x41, 0xf1, 0x13, 0x1f, 0x03, 0x40] {
            let h = fixed(0x21, fam);
            assert_eq!(refused(&h), ProxyError::V2Family(fam));
            assert_eq!(parse(&h[..14], MAX), Err(ProxyError::V2Family(fam)));
        }
    }

    #[test]
    fn v2_length_past_the_limit() {
        let mut h = v2(0x21, 0x11, &tcp4_block());
        h[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        let e = ProxyError::V2TooLong {
            len: V2_MAX_LEN,
            max: MAX,
        };
        assert_eq!(refused(&h), e);
        assert_eq!(parse(&h[..16], MAX), Err(e), "decided by the length field");
        // The limit is inclusive.
        let h = v2(0x21, 0x00, &[0; 100]);
        assert!(matches!(
            parse(&h, 116),
            Ok(ProxyStatus::Complete { len: 116, .. })
        ));
        assert_eq!(
            refused_with(&h, 115),
            ProxyError::V2TooLong { len: 116, max: 115 }
        );
        assert_eq!(
            refused_with(&v2(0x20, 0, &[]), 0),
            ProxyError::V2TooLong { len: 16, max: 0 }
        );
        // The largest header the format allows, under a limit that admits it.
        let h = v2(
            0x21,
            0x11,
            &[&tcp4_block()[..], &tlv(0x04, &[0; 65520])].concat(),
        );
        assert_eq!(h.len(), V2_MAX_LEN);
        assert!(matches!(
            parse(&h, V2_MAX_LEN),
            Ok(ProxyStatus::Complete {
                len: V2_MAX_LEN,
                ..
            })
        ));
    }

    #[test]
    fn v2_length_past_the_buffer_waits_exactly() {
        let h = v2(0x21, 0x11, &tcp4_block());
        for k in 16..h.len() {
            assert_eq!(
                parse(&h[..k], MAX),
                Ok(ProxyStatus::Partial {
                    at_most: h.len() - k
                })
            );
        }
        // Before the length field, the bound is the caller's limit.
        assert_eq!(
            parse(&h[..1], MAX),
            Ok(ProxyStatus::Partial { at_most: MAX - 1 })
        );
        assert_eq!(parse(&h[..15], 20), Ok(ProxyStatus::Partial { at_most: 5 }));
        assert_eq!(parse(&h[..3], 0), Ok(ProxyStatus::Partial { at_most: 13 }));
        assert_eq!(
            parse(&h[..3], usize::MAX),
            Ok(ProxyStatus::Partial {
                at_most: V2_MAX_LEN - 3
            })
        );
        assert_eq!(parse(b"", MAX), Ok(ProxyStatus::Partial { at_most: MAX }));
        assert_eq!(
            parse(b"", 16),
            Ok(ProxyStatus::Partial {
                at_most: V1_MAX_LEN
            })
        );
        assert_eq!(
            parse(b"P", MAX),
            Ok(ProxyStatus::Partial {
                at_most: V1_MAX_LEN - 1
            })
        );
    }

    #[test]
    fn v2_address_block_shorter_than_the_family() {
        for (fam, needs, got) in [
            (0x11, 12, 11),
            (0x12, 12, 0),
            (0x21, 36, 12),
            (0x22, 36, 35),
            (0x31, 216, 215),
            (0x32, 216, 36),
        ] {
            let h = v2(0x21, fam, &vec![0; got]);
            assert_eq!(
                refused(&h),
                ProxyError::V2AddressesShort { needs, got },
                "{fam:#x}"
            );
        }
    }

    #[test]
    fn v2_tlvs() {
        let mut block = tcp4_block();
        block.extend(tlv(0x01, b"http/1.1"));
        block.extend(tlv(PP2_TYPE_AUTHORITY, "bï.example".as_bytes()));
        block.extend(tlv(0x04, &[]));
        block.extend(tlv(
            0x20,
            &[
                0x01, 0, 0, 0, 0, 0x21, 0, 7, b'T', b'L', b'S', b'v', b'1', b'.', b'3',
            ],
        ));
        block.extend(tlv(0xea, &[0x01, b'v', b'p', b'c', b'e']));
        let buf = v2(0x21, 0x11, &block);
        let h = complete(&buf);
        assert_eq!(h.authority.as_deref(), Some("bï.example"));
        assert_eq!(h.tlv_range, 28..buf.len());
        let kinds: Vec<(u8, usize)> = h.tlvs(&buf).map(|t| (t.kind, t.value.len())).collect();
        assert_eq!(
            kinds,
            [(0x01, 8), (0x02, 11), (0x04, 0), (0x20, 15), (0xea, 5)]
        );
        assert_eq!(h.tlvs(&buf).next().map(|t| t.value), Some(&b"http/1.1"[..]));
        // A buffer that is not the one parsed ends the walk, no panic.
        assert_eq!(h.tlvs(&buf[..30]).count(), 0);
        assert_eq!(h.tlvs(&[]).count(), 0);

        let longest = "a".repeat(255);
        let h = complete(&v2(
            0x21,
            0x11,
            &[tcp4_block(), tlv(2, longest.as_bytes())].concat(),
        ));
        assert_eq!(h.authority.as_deref(), Some(&longest[..]));
    }

    #[test]
    fn v2_tlv_overrunning_the_block() {
        let with = |tail: &[u8]| v2(0x21, 0x11, &[&tcp4_block()[..], tail].concat());
        for tail in [
            &[0x04][..],
            &[0x04, 0x00],
            &[0x04, 0x00, 0x01],
            &[0x02, 0x00, 0x05, b'a', b'b'],
            &[0x04, 0xff, 0xff, 0, 0, 0],
            &[0x04, 0x00, 0x00, 0x04],
        ] {
            assert_eq!(refused(&with(tail)), ProxyError::V2TlvOverrun, "{tail:?}");
        }
        // The first TLV fits, the second does not.
        let h = with(&[tlv(0x04, b"pad"), vec![0x02, 0x00, 0x09, b'x']].concat());
        assert_eq!(refused(&h), ProxyError::V2TlvOverrun);
    }

    #[test]
    fn v2_authority_must_be_a_name() {
        let with = |tlvs: Vec<u8>| v2(0x21, 0x11, &[tcp4_block(), tlvs].concat());
        assert_eq!(
            refused(&with(tlv(2, b"bi\xff.example"))),
            ProxyError::V2TlvValue(2)
        );
        assert_eq!(
            refused(&with(tlv(2, "a".repeat(256).as_bytes()))),
            ProxyError::V2TlvValue(2)
        );
        let twice = [tlv(2, b"a.example"), tlv(2, b"b.example")].concat();
        assert_eq!(refused(&with(twice)), ProxyError::V2TlvRepeated(2));
    }

    #[test]
    fn crc32c_known_answer() {
        // RFC 3720 B.4 and the usual check value.
        assert_eq!(crc32c(&[b"123456789"]), 0xe306_9283);
        assert_eq!(crc32c(&[&[0u8; 32]]), 0x8a91_36aa);
        assert_eq!(crc32c(&[&[0xffu8; 32]]), 0x62a8_ab43);
        assert_eq!(crc32c(&[b"1234", b"", b"56789"]), 0xe306_9283);
    }

    /// A header with a CRC32c TLV, the checksum filled in as a sender would.
    fn with_checksum(fam: u8, block: &[u8], after: &[u8]) -> Vec<u8> {
        let mut tlvs = tlv(PP2_TYPE_CRC32C, &[0; 4]);
        tlvs.extend_from_slice(after);
        let mut h = v2(0x21, fam, &[block, &tlvs[..]].concat());
        let at = V2_FIXED_LEN + block.len() + 3;
        let crc = crc32c(&[&h]);
        h[at..at + 4].copy_from_slice(&crc.to_be_bytes());
        h
    }

    #[test]
    fn v2_checksum_is_verified() {
        let good = with_checksum(0x11, &tcp4_block(), &tlv(2, b"bi.example"));
        let h = complete(&good);
        assert_eq!(h.authority.as_deref(), Some("bi.example"));
        assert_eq!(h.tlvs(&good).map(|t| t.kind).collect::<Vec<_>>(), [3, 2]);
        // No flipped bit goes unnoticed; where the structure still holds
        // (addresses, the checksum itself, the authority) the checksum
        // catches it. The one exception is the checksum's own type byte: a
        // header without a checksum is valid (it is optional).
        for i in (0..good.len()).filter(|&i| i != 28) {
            let mut bad = good.clone();
            bad[i] ^= 0x04;
            let got = parse(&bad, MAX);
            assert!(!matches!(got, Ok(ProxyStatus::Complete { .. })), "byte {i}");
            if (16..28).contains(&i) || (31..35).contains(&i) || i >= 38 {
                assert_eq!(got, Err(ProxyError::V2Checksum), "byte {i}");
            }
        }
        let mut bad = good.clone();
        bad[31] ^= 1;
        assert_eq!(refused(&bad), ProxyError::V2Checksum);
        let h = complete(&with_checksum(0x31, &[b'/'; 216], &[]));
        assert_eq!(h.addresses, Addresses::Unix);

        let short = v2(0x21, 0x11, &[tcp4_block(), tlv(3, &[0; 3])].concat());
        assert_eq!(refused(&short), ProxyError::V2TlvValue(3));
        let twice = with_checksum(0x11, &tcp4_block(), &tlv(3, &[0; 4]));
        assert_eq!(refused(&twice), ProxyError::V2TlvRepeated(3));
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(
            ProxyError::V2TooLong {
                len: 65551,
                max: 4096
            }
            .to_string(),
            "PROXY v2: header of 65551 bytes is past the limit of 4096"
        );
        assert_eq!(
            ProxyError::V2Family(0x41).to_string(),
            "PROXY v2: unassigned family/transport byte 0x41"
        );
        assert_eq!(
            ProxyError::V1TooLong.to_string(),
            "PROXY v1: no CRLF within 107 bytes"
        );
    }
}
