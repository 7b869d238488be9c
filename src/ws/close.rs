//! Close codes of the contract (docs/protocol.md §6) and validation of the client's close frame.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    Normal,
    GoingAway,
    Protocol,
    BadData,
    Policy,
    TooBig,
    Internal,
    /// A hand-over to a new process (docs/protocol.md §11).
    ServiceRestart,
    SlowConsumer,
    /// 4010: the stream's numbering could not be continued; reconnect with
    /// `since`/`epoch` and be told whether the resume is complete.
    Resync,
    /// A code the client sent that we echo back.
    Other(u16),
}

impl CloseCode {
    pub fn as_u16(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::Protocol => 1002,
            CloseCode::BadData => 1007,
            CloseCode::Policy => 1008,
            CloseCode::TooBig => 1009,
            CloseCode::Internal => 1011,
            CloseCode::ServiceRestart => 1012,
            CloseCode::SlowConsumer => 1013,
            CloseCode::Resync => 4010,
            CloseCode::Other(c) => c,
        }
    }
}

/// Codes a peer may send in a close frame (RFC 6455 §7.4).
pub fn code_allowed_on_wire(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 1012..=1014 | 3000..=4999)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientClose {
    /// Reply with this code (the client's, or 1000 when it sent none).
    Valid(CloseCode),
    /// The close payload itself is bad: reply with this code instead.
    Invalid(CloseCode, &'static str),
}

pub fn parse_client_close(payload: &[u8]) -> ClientClose {
    match payload.len() {
        0 => ClientClose::Valid(CloseCode::Normal),
        1 => ClientClose::Invalid(CloseCode::Protocol, "close payload of one byte"),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !code_allowed_on_wire(code) {
                return ClientClose::Invalid(CloseCode::Protocol, "invalid close code");
            }
            if std::str::from_utf8(&payload[2..]).is_err() {
                return ClientClose::Invalid(CloseCode::BadData, "invalid UTF-8 in close reason");
            }
            ClientClose::Valid(CloseCode::Other(code))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_close_payloads() {
        assert_eq!(
            parse_client_close(&[]),
            ClientClose::Valid(CloseCode::Normal)
        );
        assert!(matches!(
            parse_client_close(&[3]),
            ClientClose::Invalid(CloseCode::Protocol, _)
        ));
        assert_eq!(
            parse_client_close(&[0x03, 0xe8, b'o', b'k']),
            ClientClose::Valid(CloseCode::Other(1000))
        );
        for bad in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            assert!(
                matches!(
                    parse_client_close(&bad.to_be_bytes()),
                    ClientClose::Invalid(CloseCode::Protocol, _)
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_client_close(&[0x03, 0xe8, 0xff]),
            ClientClose::Invalid(CloseCode::BadData, _)
        ));
    }
}
