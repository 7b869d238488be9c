//! WebSocket frames: encoding the server's frames once, and reading the
//! client's frames (sans-io) with tungstenite's header codec.

use std::io::Cursor;

use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use crate::ws::close::CloseCode;

/// Largest control-frame payload (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

fn encode(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let header = FrameHeader {
        opcode,
        ..FrameHeader::default()
    };
    let len = payload.len() as u64;
    let mut out = Vec::with_capacity(header.len(len) + payload.len());
    // Writing into a Vec cannot fail.
    let _ = header.format(len, &mut out);
    out.extend_from_slice(payload);
    out
}

/// A complete, unmasked, final text frame.
pub fn text(payload: &[u8]) -> Vec<u8> {
    encode(OpCode::Data(Data::Text), payload)
}

pub fn binary(payload: &[u8]) -> Vec<u8> {
    encode(OpCode::Data(Data::Binary), payload)
}

pub fn ping(payload: &[u8]) -> Vec<u8> {
    encode(OpCode::Control(Control::Ping), payload)
}

pub fn pong(payload: &[u8]) -> Vec<u8> {
    encode(OpCode::Control(Control::Pong), payload)
}

/// A close frame with a code and a reason cut to fit the 125-byte control limit.
pub fn close(code: CloseCode, reason: &str) -> Vec<u8> {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.as_u16().to_be_bytes());
    let mut r = reason;
    while r.len() > MAX_CONTROL_PAYLOAD - 2 {
        let mut cut = MAX_CONTROL_PAYLOAD - 2;
        while !r.is_char_boundary(cut) {
            cut -= 1;
        }
        r = &r[..cut];
    }
    payload.extend_from_slice(r.as_bytes());
    encode(OpCode::Control(Control::Close), &payload)
}

/// A violation of the framing rules, with the close code it earns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("message too big")]
    TooBig,
    #[error("invalid UTF-8 in a text message")]
    BadUtf8,
}

impl FrameError {
    pub fn close_code(&self) -> CloseCode {
        match self {
            FrameError::Protocol(_) => CloseCode::Protocol,
            FrameError::TooBig => CloseCode::TooBig,
            FrameError::BadUtf8 => CloseCode::BadData,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::Protocol(r) => r,
            FrameError::TooBig => "message too big",
            FrameError::BadUtf8 => "invalid UTF-8",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

/// One client frame, unmasked in place. `payload` indexes the caller's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub fin: bool,
    pub kind: Kind,
    pub payload: std::ops::Range<usize>,
}

/// Reads one frame from the start of `buf`. `Ok(None)`: more bytes needed.
/// `max_payload` is checked against the declared length before any payload
/// arrives, so a 2^63 length costs nothing.
pub fn read_frame(
    buf: &mut [u8],
    max_payload: usize,
) -> Result<Option<(RawFrame, usize)>, FrameError> {
    let mut cur = Cursor::new(&buf[..]);
    let (header, len) = match FrameHeader::parse(&mut cur) {
        Ok(Some(h)) => h,
        Ok(None) => return Ok(None),
        Err(_) => return Err(FrameError::Protocol("reserved opcode")),
    };
    let head_len = cur.position() as usize;
    if header.rsv1 || header.rsv2 || header.rsv3 {
        return Err(FrameError::Protocol("reserved bits set"));
    }
    let Some(mask) = header.mask else {
        return Err(FrameError::Protocol("client frames must be masked"));
    };
    let kind = match header.opcode {
        OpCode::Data(Data::Continue) => Kind::Continuation,
        OpCode::Data(Data::Text) => Kind::Text,
        OpCode::Data(Data::Binary) => Kind::Binary,
        OpCode::Control(Control::Close) => Kind::Close,
        OpCode::Control(Control::Ping) => Kind::Ping,
        OpCode::Control(Control::Pong) => Kind::Pong,
        _ => return Err(FrameError::Protocol("reserved opcode")),
    };
    let control = matches!(kind, Kind::Close | Kind::Ping | Kind::Pong);
    if control && len > MAX_CONTROL_PAYLOAD as u64 {
        return Err(FrameError::Protocol("control frame over 125 bytes"));
    }
    if control && !header.is_final {
        return Err(FrameError::Protocol("fragmented control frame"));
    }
    // Control frames are bounded above; they are not part of the message
    // being put together, so its room does not apply to them.
    if !control && len > max_payload as u64 {
        return Err(FrameError::TooBig);
    }
    let len = len as usize;
    let total = head_len + len;
    if buf.len() < total {
        return Ok(None);
    }
    let payload = &mut buf[head_len..total];
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
    Ok(Some((
        RawFrame {
            fin: header.is_final,
            kind,
            payload: head_len..total,
        },
        total,
    )))
}

/// A server frame this module built → (opcode byte, payload). `None` when the
/// bytes are not exactly one unmasked frame.
pub fn split_server_frame(f: &[u8]) -> Option<(u8, &[u8])> {
    let (&b0, rest) = f.split_first()?;
    let (&b1, rest) = rest.split_first()?;
    if b1 & 0x80 != 0 {
        return None;
    }
    let (len, payload) = match b1 {
        126 => {
            let (l, p) = rest.split_at_checked(2)?;
            (u16::from_be_bytes([l[0], l[1]]) as usize, p)
        }
        127 => {
            let (l, p) = rest.split_at_checked(8)?;
            (u64::from_be_bytes(l.try_into().ok()?) as usize, p)
        }
        n => (n as usize, rest),
    };
    (payload.len() == len).then_some((b0, payload))
}

/// Masks a payload the way a client does: for tests and the fuzz targets.
pub fn client_frame(first_byte: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = vec![first_byte];
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    #[test]
    fn server_frames() {
        assert_eq!(text(b"hi"), vec![0x81, 2, b'h', b'i']);
        let big = text(&[b'a'; 300]);
        assert_eq!(&big[..4], &[0x81, 126, 1, 44]);
        assert_eq!(big.len(), 304);
        let c = close(CloseCode::SlowConsumer, "slow consumer");
        assert_eq!(&c[..4], &[0x88, 15, 0x03, 0xf5]);
        let long = close(CloseCode::Policy, &"é".repeat(100));
        assert!(long.len() <= 2 + 125);
        assert!(std::str::from_utf8(&long[4..]).is_ok());
    }

    #[test]
    fn reads_a_masked_text_frame_split_anywhere() {
        let f = client_frame(0x81, b"Hello", M);
        for cut in 0..f.len() {
            let mut part = f[..cut].to_vec();
            assert_eq!(read_frame(&mut part, 1024), Ok(None), "cut {cut}");
        }
        let mut whole = f.clone();
        let (frame, used) = read_frame(&mut whole, 1024).unwrap().unwrap();
        assert_eq!(used, f.len());
        assert!(frame.fin);
        assert_eq!(frame.kind, Kind::Text);
        assert_eq!(&whole[frame.payload], b"Hello");
    }

    #[test]
    fn violations() {
        let mut unmasked = vec![0x81, 2, b'h', b'i'];
        assert_eq!(
            read_frame(&mut unmasked, 1024).unwrap_err().close_code(),
            CloseCode::Protocol
        );
        let mut rsv = client_frame(0x81 | 0x40, b"x", M);
        assert!(matches!(
            read_frame(&mut rsv, 1024),
            Err(FrameError::Protocol(_))
        ));
        let mut op = client_frame(0x83, b"x", M);
        assert!(matches!(
            read_frame(&mut op, 1024),
            Err(FrameError::Protocol(_))
        ));
        let mut op = client_frame(0x8b, b"x", M);
        assert!(matches!(
            read_frame(&mut op, 1024),
            Err(FrameError::Protocol(_))
        ));
        let mut big_ping = client_frame(0x89, &[0; 126], M);
        assert!(matches!(
            read_frame(&mut big_ping, 1024),
            Err(FrameError::Protocol(_))
        ));
        let mut frag_ping = client_frame(0x09, b"x", M);
        assert!(matches!(
            read_frame(&mut frag_ping, 1024),
            Err(FrameError::Protocol(_))
        ));
        let mut huge = client_frame(0x82, &[0; 2000], M);
        assert_eq!(read_frame(&mut huge, 1024), Err(FrameError::TooBig));
    }

    #[test]
    fn length_of_2_pow_63_is_too_big_before_any_payload() {
        let mut h = vec![0x82, 0x80 | 127];
        h.extend_from_slice(&(1u64 << 63).to_be_bytes());
        h.extend_from_slice(&M);
        assert_eq!(read_frame(&mut h, 64 << 10), Err(FrameError::TooBig));
    }
}
