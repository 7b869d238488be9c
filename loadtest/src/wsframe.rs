//! A minimal sans-io WebSocket frame codec (RFC 6455 §5), enough for both ends of the
//! harness: the subscriber loop reads unmasked server frames and writes masked
//! control frames; the floor server reads masked client frames and writes unmasked ones.

use thiserror::Error;

/// Frame opcodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    fn from_bits(b: u8) -> Option<Opcode> {
        Some(match b {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    /// Control frames (close, ping, pong).
    pub fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// A frame the peer should not have sent; the reader closes with the given close code.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("reserved bits set")]
    ReservedBits,
    #[error("reserved opcode {0:#x}")]
    BadOpcode(u8),
    #[error("control frame longer than 125 bytes or fragmented")]
    BadControl,
    #[error("frame masked when it must not be, or unmasked when it must be")]
    Masking,
    #[error("frame of {0} bytes is over the limit")]
    TooLarge(u64),
}

impl FrameError {
    /// The close code the contract pairs with this error.
    pub fn close_code(&self) -> u16 {
        match self {
            FrameError::TooLarge(_) => 1009,
            _ => 1002,
        }
    }
}

/// A decoded frame header; the payload is `buf[payload_start..payload_start + len]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// FIN bit: last fragment of a message.
    pub fin: bool,
    pub opcode: Opcode,
    /// Masking key, when the frame is masked (client to server).
    pub mask: Option<[u8; 4]>,
    /// Offset of the payload in the decoded buffer.
    pub payload_start: usize,
    /// Payload length.
    pub len: usize,
}

impl Header {
    /// Bytes of the whole frame (header and payload).
    pub fn frame_len(&self) -> usize {
        self.payload_start + self.len
    }
}

/// Decodes the frame at the start of `buf`. `Ok(None)`: not all of it is there yet.
/// `masked` says what the reader requires (true on the server side).
pub fn decode(buf: &[u8], masked: bool, max_payload: usize) -> Result<Option<Header>, FrameError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(FrameError::ReservedBits);
    }
    let fin = b0 & 0x80 != 0;
    let opcode = Opcode::from_bits(b0 & 0x0F).ok_or(FrameError::BadOpcode(b0 & 0x0F))?;
    let is_masked = b1 & 0x80 != 0;
    if is_masked != masked {
        return Err(FrameError::Masking);
    }
    let (len, mut pos) = match b1 & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        n => (u64::from(n), 2),
    };
    if opcode.is_control() && (len > 125 || !fin) {
        return Err(FrameError::BadControl);
    }
    if len > max_payload as u64 {
        return Err(FrameError::TooLarge(len));
    }
    let mask = if is_masked {
        if buf.len() < pos + 4 {
            return Ok(None);
        }
        let m = [buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]];
        pos += 4;
        Some(m)
    } else {
        None
    };
    // `len <= max_payload`, a usize.
    let len = len as usize;
    if buf.len() < pos + len {
        return Ok(None);
    }
    Ok(Some(Header {
        fin,
        opcode,
        mask,
        payload_start: pos,
        len,
    }))
}

/// XORs `data` with the masking key (mask and unmask are the same operation).
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Appends the header of a final frame of `len` bytes, unmasked or with `mask`.
pub fn encode_header(out: &mut Vec<u8>, opcode: Opcode, len: usize, mask: Option<[u8; 4]>) {
    out.push(0x80 | opcode.bits());
    let m = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.push(m | len as u8);
    } else if let Ok(l16) = u16::try_from(len) {
        out.push(m | 126);
        out.extend_from_slice(&l16.to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
}

/// Appends a whole final frame.
pub fn encode(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8], mask: Option<[u8; 4]>) {
    encode_header(out, opcode, payload.len(), mask);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key);
    }
}

/// Appends a close frame with a status code.
pub fn encode_close(out: &mut Vec<u8>, code: u16, reason: &str, mask: Option<[u8; 4]>) {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..reason.len().min(123)]);
    encode(out, Opcode::Close, &payload, mask);
}

/// The status code of a close payload: 1005 (none given) when it is empty.
pub fn close_code(payload: &[u8]) -> u16 {
    if payload.len() >= 2 {
        u16::from_be_bytes([payload[0], payload[1]])
    } else {
        1005
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_all_length_encodings() {
        for len in [0usize, 5, 125, 126, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            for mask in [None, Some([1, 2, 3, 4])] {
                let mut buf = Vec::new();
                encode(&mut buf, Opcode::Text, &payload, mask);
                // Every prefix is incomplete.
                for cut in [0, 1, buf.len() / 2, buf.len() - 1] {
                    if cut < buf.len() {
                        assert_eq!(decode(&buf[..cut], mask.is_some(), 1 << 20), Ok(None));
                    }
                }
                let h = decode(&buf, mask.is_some(), 1 << 20).unwrap().unwrap();
                assert_eq!((h.fin, h.opcode, h.len), (true, Opcode::Text, len));
                assert_eq!(h.frame_len(), buf.len());
                let mut got = buf[h.payload_start..h.frame_len()].to_vec();
                if let Some(k) = h.mask {
                    apply_mask(&mut got, k);
                }
                assert_eq!(got, payload);
            }
        }
    }

    #[test]
    fn rejects_protocol_violations() {
        assert_eq!(
            decode(&[0xC1, 0x00], false, 10),
            Err(FrameError::ReservedBits)
        );
        assert_eq!(
            decode(&[0x83, 0x00], false, 10),
            Err(FrameError::BadOpcode(3))
        );
        assert_eq!(
            decode(&[0x09, 0x00], false, 10),
            Err(FrameError::BadControl)
        );
        assert_eq!(
            decode(&[0x89, 126, 0, 200], false, 1000),
            Err(FrameError::BadControl)
        );
        assert_eq!(
            decode(&[0x81, 0x80, 0, 0, 0, 0], false, 10),
            Err(FrameError::Masking)
        );
        assert_eq!(decode(&[0x81, 0x00], true, 10), Err(FrameError::Masking));
        assert_eq!(
            decode(&[0x81, 20], false, 10),
            Err(FrameError::TooLarge(20))
        );
        assert_eq!(FrameError::TooLarge(1).close_code(), 1009);
    }

    #[test]
    fn close_payloads() {
        let mut buf = Vec::new();
        encode_close(&mut buf, 1013, "slow consumer", None);
        let h = decode(&buf, false, 125).unwrap().unwrap();
        assert_eq!(h.opcode, Opcode::Close);
        assert_eq!(close_code(&buf[h.payload_start..h.frame_len()]), 1013);
        assert_eq!(close_code(&[]), 1005);
    }
}
