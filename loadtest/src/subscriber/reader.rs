//! The sans-io reader of server frames: bytes in (in whatever pieces the socket gives
//! them), complete messages and control frames out. It keeps the bytes of an
//! incomplete frame and the parts of a fragmented message between reads, and checks
//! what RFC 6455 asks of a server's frames (unmasked, no reserved bits or opcodes,
//! control frames short and whole, continuations only inside a fragmented message).
//!
//! The common case (no partial frame carried over) parses straight from the caller's
//! buffer without copying.

use crate::wsframe::{self, FrameError, Opcode};
use thiserror::Error;

/// What the reader found in the bytes, in the order the server sent it.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A complete text or binary message (fragments already joined).
    Message(&'a [u8]),
    /// A ping; the payload to echo in the pong.
    Ping(&'a [u8]),
    Pong,
    /// A close frame with its code (1005 when it carried none).
    Close(u16),
}

/// Whether the caller wants the rest of the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Stop here: the connection is ending; the rest of the bytes is dropped.
    Stop,
}

/// Frames a server must not send; the client closes with `close_code()`.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ReadError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("continuation frame outside a fragmented message")]
    StrayContinuation,
    #[error("new data frame inside a fragmented message")]
    InterleavedMessage,
    #[error("message over {0} bytes")]
    MessageTooBig(usize),
}

impl ReadError {
    /// The close code the client sends back.
    pub fn close_code(&self) -> u16 {
        match self {
            ReadError::Frame(e) => e.close_code(),
            ReadError::MessageTooBig(_) => 1009,
            _ => 1002,
        }
    }

    /// A short label for the failure table.
    pub fn kind(&self) -> &'static str {
        match self {
            ReadError::Frame(FrameError::TooLarge(_)) | ReadError::MessageTooBig(_) => {
                "message_too_big"
            }
            _ => "protocol_error",
        }
    }
}

/// Reassembles server frames across reads.
#[derive(Debug)]
pub struct FrameReader {
    /// Bytes of an incomplete frame, kept for the next read.
    pending: Vec<u8>,
    /// The fragments of a message whose last fragment has not arrived.
    fragments: Option<Vec<u8>>,
    /// Largest message (and frame payload) accepted.
    max_message: usize,
}

impl FrameReader {
    pub fn new(max_message: usize) -> Self {
        FrameReader {
            pending: Vec::new(),
            fragments: None,
            max_message,
        }
    }

    /// Bytes held between reads (an incomplete frame and fragments).
    pub fn buffered(&self) -> usize {
        self.pending.len() + self.fragments.as_ref().map_or(0, Vec::len)
    }

    /// Feeds bytes read from the socket; calls `on` for each complete message or control
    /// frame until it answers `Stop`. An error ends the connection.
    pub fn feed(
        &mut self,
        data: &[u8],
        on: &mut dyn FnMut(Frame<'_>) -> Flow,
    ) -> Result<Flow, ReadError> {
        if self.pending.is_empty() {
            let (used, flow) = self.consume(data, on)?;
            if flow == Flow::Continue {
                self.pending.extend_from_slice(&data[used..]);
            }
            Ok(flow)
        } else {
            let mut buf = std::mem::take(&mut self.pending);
            buf.extend_from_slice(data);
            let result = self.consume(&buf, on);
            if let Ok((used, Flow::Continue)) = result {
                buf.drain(..used);
                // Keeps the allocation for the next partial frame.
                self.pending = buf;
            }
            result.map(|(_, flow)| flow)
        }
    }

    /// Consumes the complete frames at the start of `buf`; answers the bytes used.
    fn consume(
        &mut self,
        buf: &[u8],
        on: &mut dyn FnMut(Frame<'_>) -> Flow,
    ) -> Result<(usize, Flow), ReadError> {
        let mut pos = 0;
        while let Some(h) = wsframe::decode(&buf[pos..], false, self.max_message)? {
            let payload = &buf[pos + h.payload_start..pos + h.frame_len()];
            pos += h.frame_len();
            let flow = match h.opcode {
                Opcode::Text | Opcode::Binary => {
                    if self.fragments.is_some() {
                        return Err(ReadError::InterleavedMessage);
                    }
                    if h.fin {
                        on(Frame::Message(payload))
                    } else {
                        self.fragments = Some(payload.to_vec());
                        Flow::Continue
                    }
                }
                Opcode::Continuation => {
                    let Some(parts) = self.fragments.as_mut() else {
                        return Err(ReadError::StrayContinuation);
                    };
                    if parts.len() + payload.len() > self.max_message {
                        return Err(ReadError::MessageTooBig(self.max_message));
                    }
                    parts.extend_from_slice(payload);
                    if h.fin {
                        let whole = self.fragments.take().unwrap_or_default();
                        on(Frame::Message(&whole))
                    } else {
                        Flow::Continue
                    }
                }
                Opcode::Ping => on(Frame::Ping(payload)),
                Opcode::Pong => on(Frame::Pong),
                Opcode::Close => on(Frame::Close(wsframe::close_code(payload))),
            };
            if flow == Flow::Stop {
                return Ok((pos, Flow::Stop));
            }
        }
        Ok((pos, Flow::Continue))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wsframe::{encode, encode_close, encode_header};

    /// What the reader reported, owned, for comparing.
    #[derive(Debug, PartialEq, Eq)]
    enum Seen {
        Message(Vec<u8>),
        Ping(Vec<u8>),
        Pong,
        Close(u16),
    }

    fn feed_all(r: &mut FrameReader, data: &[u8], seen: &mut Vec<Seen>) -> Result<Flow, ReadError> {
        r.feed(data, &mut |f| {
            seen.push(match f {
                Frame::Message(m) => Seen::Message(m.to_vec()),
                Frame::Ping(p) => Seen::Ping(p.to_vec()),
                Frame::Pong => Seen::Pong,
                Frame::Close(c) => Seen::Close(c),
            });
            Flow::Continue
        })
    }

    /// A frame with the FIN bit as given (the codec's encoder always sets it).
    fn frame(opcode: Opcode, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_header(&mut out, opcode, payload.len(), None);
        if !fin {
            out[0] &= 0x7F;
        }
        out.extend_from_slice(payload);
        out
    }

    /// A stream of every kind of frame a server sends, and what it means.
    fn script() -> (Vec<u8>, Vec<Seen>) {
        let mut bytes = Vec::new();
        encode(
            &mut bytes,
            Opcode::Text,
            br#"{"type":"event","seq":1}"#,
            None,
        );
        encode(&mut bytes, Opcode::Ping, b"hb", None);
        let big = vec![b'x'; 70_000];
        encode(&mut bytes, Opcode::Text, &big, None);
        bytes.extend(frame(Opcode::Text, false, b"frag"));
        encode(&mut bytes, Opcode::Pong, b"", None);
        bytes.extend(frame(Opcode::Continuation, false, b"men"));
        bytes.extend(frame(Opcode::Continuation, true, b"ted"));
        encode_close(&mut bytes, 1013, "slow consumer", None);
        let seen = vec![
            Seen::Message(br#"{"type":"event","seq":1}"#.to_vec()),
            Seen::Ping(b"hb".to_vec()),
            Seen::Message(big),
            Seen::Pong,
            Seen::Message(b"fragmented".to_vec()),
            Seen::Close(1013),
        ];
        (bytes, seen)
    }

    #[test]
    fn any_split_of_the_bytes_reads_the_same() {
        let (bytes, want) = script();
        // Every cut point for one split, and a few piece sizes for many splits.
        for cut in (0..bytes.len())
            .step_by(97)
            .chain([1, 2, 3, 5, bytes.len() - 1])
        {
            let mut r = FrameReader::new(1 << 20);
            let mut seen = Vec::new();
            feed_all(&mut r, &bytes[..cut], &mut seen).unwrap();
            feed_all(&mut r, &bytes[cut..], &mut seen).unwrap();
            assert_eq!(seen, want, "cut at {cut}");
            assert_eq!(r.buffered(), 0);
        }
        for piece in [1, 2, 7, 125, 4096] {
            let mut r = FrameReader::new(1 << 20);
            let mut seen = Vec::new();
            for chunk in bytes.chunks(piece) {
                feed_all(&mut r, chunk, &mut seen).unwrap();
            }
            assert_eq!(seen, want, "pieces of {piece}");
        }
    }

    #[test]
    fn stop_drops_the_rest() {
        let (bytes, _) = script();
        let mut r = FrameReader::new(1 << 20);
        let mut n = 0;
        let flow = r
            .feed(&bytes, &mut |_| {
                n += 1;
                if n == 2 {
                    Flow::Stop
                } else {
                    Flow::Continue
                }
            })
            .unwrap();
        assert_eq!((flow, n), (Flow::Stop, 2));
    }

    #[test]
    fn refuses_what_a_server_must_not_send() {
        let cases: Vec<(Vec<u8>, ReadError)> = vec![
            (
                frame(Opcode::Continuation, true, b"x"),
                ReadError::StrayContinuation,
            ),
            (
                [
                    frame(Opcode::Text, false, b"a"),
                    frame(Opcode::Text, true, b"b"),
                ]
                .concat(),
                ReadError::InterleavedMessage,
            ),
            (
                [
                    frame(Opcode::Text, false, &[b'a'; 60]),
                    frame(Opcode::Continuation, true, &[b'b'; 60]),
                ]
                .concat(),
                ReadError::MessageTooBig(100),
            ),
            (
                frame(Opcode::Text, true, &[0; 101]),
                FrameError::TooLarge(101).into(),
            ),
            (
                vec![0x81, 0x81, 1, 2, 3, 4, b'x'],
                FrameError::Masking.into(),
            ),
            (vec![0x91, 0x00], FrameError::ReservedBits.into()),
            (
                frame(Opcode::Ping, false, b""),
                FrameError::BadControl.into(),
            ),
        ];
        for (bytes, want) in cases {
            let mut r = FrameReader::new(100);
            let got = feed_all(&mut r, &bytes, &mut Vec::new()).unwrap_err();
            assert_eq!(got, want);
        }
        assert_eq!(ReadError::MessageTooBig(1).close_code(), 1009);
        assert_eq!(ReadError::StrayContinuation.close_code(), 1002);
        assert_eq!(
            ReadError::from(FrameError::TooLarge(5)).kind(),
            "message_too_big"
        );
    }

    #[test]
    fn an_error_after_good_frames_reports_them_first() {
        let mut bytes = Vec::new();
        encode(&mut bytes, Opcode::Text, b"ok", None);
        bytes.extend([0x83, 0x00]);
        let mut r = FrameReader::new(100);
        let mut seen = Vec::new();
        assert_eq!(
            feed_all(&mut r, &bytes, &mut seen),
            Err(FrameError::BadOpcode(3).into())
        );
        assert_eq!(seen, vec![Seen::Message(b"ok".to_vec())]);
    }
}
