//! Client frames → whole messages: fragmentation, UTF-8 and size rules (docs/protocol.md §6).
//! Sans-io: it is handed the connection's input bytes and says how many it used.

use crate::ws::close::{parse_client_close, ClientClose};
use crate::ws::frame::{read_frame, FrameError, Kind};

/// A whole message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    Close(ClientClose),
}

/// A fragmented message being put together. Only exists between the first and
/// last fragment, so an idle connection holds no buffer.
#[derive(Debug)]
struct Partial {
    text: bool,
    data: Vec<u8>,
}

#[derive(Debug, Default)]
pub struct MessageReader {
    /// Boxed: only a connection in the middle of a fragmented message has one.
    partial: Option<Box<Partial>>,
}

impl MessageReader {
    /// Reads the next message from `buf`. `Ok(None)`: more bytes are needed and
    /// `consumed` bytes (whole fragments already absorbed) may be dropped.
    pub fn next(
        &mut self,
        buf: &mut [u8],
        max_message: usize,
        consumed: &mut usize,
    ) -> Result<Option<Inbound>, FrameError> {
        loop {
            let held = self.partial.as_ref().map_or(0, |p| p.data.len());
            let room = max_message.saturating_sub(held);
            let Some((frame, used)) = read_frame(&mut buf[*consumed..], room)? else {
                return Ok(None);
            };
            let start = *consumed;
            *consumed += used;
            let payload = &buf[start + frame.payload.start..start + frame.payload.end];
            match frame.kind {
                Kind::Ping => return Ok(Some(Inbound::Ping(payload.to_vec()))),
                Kind::Pong => return Ok(Some(Inbound::Pong)),
                Kind::Close => return Ok(Some(Inbound::Close(parse_client_close(payload)))),
                Kind::Text | Kind::Binary => {
                    if self.partial.is_some() {
                        return Err(FrameError::Protocol("new message inside a fragmented one"));
                    }
                    let text = frame.kind == Kind::Text;
                    if frame.fin {
                        return finish(text, payload.to_vec()).map(Some);
                    }
                    self.partial = Some(Box::new(Partial {
                        text,
                        data: payload.to_vec(),
                    }));
                }
                Kind::Continuation => {
                    let Some(p) = self.partial.as_mut() else {
                        return Err(FrameError::Protocol("continuation without a message"));
                    };
                    p.data.extend_from_slice(payload);
                    if frame.fin {
                        let Some(p) = self.partial.take() else {
                            unreachable!("checked above")
                        };
                        return finish(p.text, p.data).map(Some);
                    }
                }
            }
        }
    }

    pub fn in_message(&self) -> bool {
        self.partial.is_some()
    }
}

fn finish(text: bool, data: Vec<u8>) -> Result<Inbound, FrameError> {
    if text {
        String::from_utf8(data)
            .map(Inbound::Text)
            .map_err(|_| FrameError::BadUtf8)
    } else {
        Ok(Inbound::Binary(data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::close::CloseCode;
    use crate::ws::frame::client_frame;

    const M: [u8; 4] = [1, 2, 3, 4];

    fn all(bytes: &[u8], max: usize) -> Result<Vec<Inbound>, FrameError> {
        let mut buf = bytes.to_vec();
        let mut r = MessageReader::default();
        let mut used = 0;
        let mut out = Vec::new();
        while let Some(m) = r.next(&mut buf, max, &mut used)? {
            out.push(m);
        }
        Ok(out)
    }

    #[test]
    fn fragments_with_a_ping_in_between() {
        let mut b = client_frame(0x01, b"Hel", M);
        b.extend(client_frame(0x89, b"p", M));
        b.extend(client_frame(0x80, b"lo", M));
        assert_eq!(
            all(&b, 1024).unwrap(),
            vec![Inbound::Ping(b"p".to_vec()), Inbound::Text("Hello".into())]
        );
    }

    #[test]
    fn fragment_rules() {
        assert!(all(&client_frame(0x80, b"x", M), 1024).is_err());
        let mut b = client_frame(0x01, b"a", M);
        b.extend(client_frame(0x81, b"b", M));
        assert!(matches!(all(&b, 1024), Err(FrameError::Protocol(_))));
    }

    #[test]
    fn size_counts_all_fragments() {
        let mut b = client_frame(0x02, &[0; 600], M);
        b.extend(client_frame(0x80, &[0; 600], M));
        assert_eq!(all(&b, 1000), Err(FrameError::TooBig));
        assert!(all(&b, 1200).is_ok());
    }

    #[test]
    fn a_ping_fits_inside_a_message_that_nearly_fills_the_limit() {
        let mut b = client_frame(0x02, &[0; 990], M);
        b.extend(client_frame(0x89, &[7; 100], M));
        b.extend(client_frame(0x80, &[0; 10], M));
        assert_eq!(
            all(&b, 1000).unwrap(),
            vec![Inbound::Ping(vec![7; 100]), Inbound::Binary(vec![0; 1000])]
        );
    }

    #[test]
    fn utf8_is_checked_on_the_whole_message() {
        // "é" split across two fragments is fine.
        let mut b = client_frame(0x01, &[0xc3], M);
        b.extend(client_frame(0x80, &[0xa9], M));
        assert_eq!(all(&b, 1024).unwrap(), vec![Inbound::Text("é".into())]);
        assert_eq!(
            all(&client_frame(0x81, &[0xff, 0xfe], M), 1024),
            Err(FrameError::BadUtf8)
        );
        assert_eq!(FrameError::BadUtf8.close_code(), CloseCode::BadData);
    }

    #[test]
    fn partial_input_keeps_state() {
        let mut b = client_frame(0x01, b"Hel", M);
        let second = client_frame(0x80, b"lo", M);
        b.extend_from_slice(&second[..3]);
        let mut r = MessageReader::default();
        let mut used = 0;
        assert_eq!(r.next(&mut b, 1024, &mut used), Ok(None));
        assert!(r.in_message());
        let mut rest = b[used..].to_vec();
        rest.extend_from_slice(&second[3..]);
        let mut used2 = 0;
        assert_eq!(
            r.next(&mut rest, 1024, &mut used2),
            Ok(Some(Inbound::Text("Hello".into())))
        );
    }
}
