//! What the harness and its floor server restate of the wire contract
//! (`docs/protocol.md`): identifier syntax and the publish API's limits. They are
//! written again here rather than imported from the `bistream` crate (see the crate
//! documentation for why); `tests/contract_limits.rs` holds them equal to the server's.

/// Largest publish body (`413` past it).
pub const MAX_PUBLISH_BODY: usize = 1 << 20;
/// Most events in one publish body (`413` past it).
pub const MAX_PUBLISH_EVENTS: usize = 1000;
/// Longest `location_id`.
pub const MAX_LOCATION_LEN: usize = 128;
/// Longest `event_type`.
pub const MAX_EVENT_TYPE_LEN: usize = 64;
/// Longest `key` of a published event (`docs/protocol.md §9`).
pub const MAX_KEY_LEN: usize = 128;

/// A byte of a contract identifier: `[A-Za-z0-9_.:-]`.
fn id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-')
}

/// Whether `s` is 1 to `max` identifier bytes.
fn ident(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(id_byte)
}

/// `[A-Za-z0-9_.:-]{1,128}`, taken as it stands in the path (no percent-decoding), and
/// neither `.` nor `..`, which a path normaliser on the way would eat.
pub fn valid_location_id(s: &str) -> bool {
    ident(s, MAX_LOCATION_LEN) && s != "." && s != ".."
}

/// `[A-Za-z0-9_.:-]{1,64}`.
pub fn valid_event_type(s: &str) -> bool {
    ident(s, MAX_EVENT_TYPE_LEN)
}

/// `[A-Za-z0-9_.:-]{1,128}`.
pub fn valid_key(s: &str) -> bool {
    ident(s, MAX_KEY_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(valid_location_id("loc-1") && valid_location_id("A.b:c_d-9"));
        assert!(valid_location_id("...") && valid_location_id(&"x".repeat(128)));
        for bad in ["", ".", "..", "a/b", "%41", "a b", "é"] {
            assert!(!valid_location_id(bad), "{bad}");
        }
        assert!(!valid_location_id(&"x".repeat(129)));
        assert!(valid_event_type(&"E".repeat(64)) && !valid_event_type(&"E".repeat(65)));
        assert!(valid_key("k17") && !valid_key("k 17") && !valid_key(""));
    }
}
