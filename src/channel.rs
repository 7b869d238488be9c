//! The six BI channels, their endpoint paths, and the id syntax of the contract.

use std::fmt;

/// One BI stream kind. A *stream* is a (channel, location_id) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    Dashboard,
    RevenueIntelligence,
    BotPerformance,
    BusinessIntelligence,
    AiConcierge,
    AnalyticsAdvanced,
}

impl Channel {
    pub const ALL: [Channel; 6] = [
        Channel::Dashboard,
        Channel::RevenueIntelligence,
        Channel::BotPerformance,
        Channel::BusinessIntelligence,
        Channel::AiConcierge,
        Channel::AnalyticsAdvanced,
    ];

    /// The channel id used in messages, tokens and metric labels.
    pub fn id(self) -> &'static str {
        match self {
            Channel::Dashboard => "dashboard",
            Channel::RevenueIntelligence => "revenue-intelligence",
            Channel::BotPerformance => "bot-performance",
            Channel::BusinessIntelligence => "business-intelligence",
            Channel::AiConcierge => "ai-concierge",
            Channel::AnalyticsAdvanced => "analytics-advanced",
        }
    }

    /// The path prefix of the channel's endpoint, up to and including the slash
    /// before `{location_id}`.
    pub fn path_prefix(self) -> &'static str {
        match self {
            Channel::Dashboard => "/ws/dashboard/",
            Channel::RevenueIntelligence => "/ws/bi/revenue-intelligence/",
            Channel::BotPerformance => "/ws/bot-performance/",
            Channel::BusinessIntelligence => "/ws/business-intelligence/",
            Channel::AiConcierge => "/ws/ai-concierge/",
            Channel::AnalyticsAdvanced => "/ws/analytics/advanced/",
        }
    }

    pub fn from_id(id: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.id() == id)
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

pub const MAX_LOCATION_ID_LEN: usize = 128;
pub const MAX_EVENT_TYPE_LEN: usize = 64;
pub const MAX_KEY_LEN: usize = 128;

fn id_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-')
}

/// `[A-Za-z0-9_.:-]{1,128}`, as it stands in the path: no percent-decoding, so
/// `%41` and `..` are refused rather than interpreted.
pub fn valid_location_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_LOCATION_ID_LEN
        && s.bytes().all(id_char)
        && s != "."
        && s != ".."
}

/// `[A-Za-z0-9_.:-]{1,64}`.
pub fn valid_event_type(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_EVENT_TYPE_LEN && s.bytes().all(id_char)
}

/// A last-value key (`docs/protocol.md` §9): `[A-Za-z0-9_.:-]{1,128}`.
pub fn valid_key(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_KEY_LEN && s.bytes().all(id_char)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for c in Channel::ALL {
            assert_eq!(Channel::from_id(c.id()), Some(c));
            assert!(c.path_prefix().starts_with("/ws/"));
            assert!(c.path_prefix().ends_with('/'));
        }
        assert_eq!(Channel::from_id("nope"), None);
    }

    #[test]
    fn location_ids() {
        assert!(valid_location_id("loc-1"));
        assert!(valid_location_id("A.b:c_d-9"));
        assert!(valid_location_id(&"x".repeat(128)));
        assert!(!valid_location_id(&"x".repeat(129)));
        assert!(!valid_location_id(""));
        assert!(!valid_location_id(".."));
        assert!(!valid_location_id("%41"));
        assert!(!valid_location_id("a/b"));
        assert!(!valid_location_id("é"));
    }

    #[test]
    fn event_types() {
        assert!(valid_event_type("REVENUE_UPDATE"));
        assert!(!valid_event_type(""));
        assert!(!valid_event_type(&"E".repeat(65)));
        assert!(!valid_event_type("A B"));
    }
}
