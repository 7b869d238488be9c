//! The six BI channels of the wire contract, and the (channel, location) streams a
//! run spreads its connections over.

use crate::contract::valid_location_id;
use thiserror::Error;

/// Channel ids and their WebSocket paths (below `/ws/`), in the contract's order.
pub const CHANNELS: [(&str, &str); 6] = [
    ("dashboard", "dashboard"),
    ("revenue-intelligence", "bi/revenue-intelligence"),
    ("bot-performance", "bot-performance"),
    ("business-intelligence", "business-intelligence"),
    ("ai-concierge", "ai-concierge"),
    ("analytics-advanced", "analytics/advanced"),
];

/// A bad `--channels` / `--locations` / `--event-type` value (usage error, exit 2).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum StreamError {
    #[error("unknown channel `{0}` (known: dashboard, revenue-intelligence, bot-performance, business-intelligence, ai-concierge, analytics-advanced)")]
    UnknownChannel(String),
    #[error("--channels must be a count from 1 to 6, `all`, or a comma-separated list of channel ids, not `{0}`")]
    BadChannelCount(String),
    #[error("channel `{0}` is listed twice")]
    DuplicateChannel(String),
    #[error("--locations must be at least 1")]
    NoLocation,
    #[error("location id `{0}` does not match [A-Za-z0-9_.:-]{{1,128}}")]
    BadLocation(String),
    #[error("event type `{0}` does not match [A-Za-z0-9_.:-]{{1,64}}")]
    BadEventType(String),
}

/// The WebSocket path segment of a channel id (`analytics-advanced` → `analytics/advanced`).
pub fn channel_path(channel: &str) -> Option<&'static str> {
    CHANNELS
        .iter()
        .find(|(id, _)| *id == channel)
        .map(|(_, path)| *path)
}

/// The channel id served at a path below `/ws/` (`bi/revenue-intelligence` → `revenue-intelligence`).
pub fn channel_of_path(path: &str) -> Option<&'static str> {
    CHANNELS.iter().find(|(_, p)| *p == path).map(|(id, _)| *id)
}

/// Parses `--channels`: a count (`3` = the first three), `all`, or a list of ids.
pub fn parse_channels(spec: &str) -> Result<Vec<&'static str>, StreamError> {
    let spec = spec.trim();
    if spec.eq_ignore_ascii_case("all") {
        return Ok(CHANNELS.iter().map(|(id, _)| *id).collect());
    }
    if spec.bytes().all(|b| b.is_ascii_digit()) && !spec.is_empty() {
        let n: usize = spec
            .parse()
            .map_err(|_| StreamError::BadChannelCount(spec.to_owned()))?;
        if n == 0 || n > CHANNELS.len() {
            return Err(StreamError::BadChannelCount(spec.to_owned()));
        }
        return Ok(CHANNELS[..n].iter().map(|(id, _)| *id).collect());
    }
    let mut out: Vec<&'static str> = Vec::new();
    for part in spec.split(',').map(str::trim) {
        let id = CHANNELS
            .iter()
            .map(|(id, _)| *id)
            .find(|id| *id == part)
            .ok_or_else(|| StreamError::UnknownChannel(part.to_owned()))?;
        if out.contains(&id) {
            return Err(StreamError::DuplicateChannel(part.to_owned()));
        }
        out.push(id);
    }
    Ok(out)
}

/// One (channel, location) pair: the unit of `seq` numbering.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stream {
    /// Channel id as published (`revenue-intelligence`).
    pub channel: String,
    /// Location id as it stands in the path and in published events.
    pub location: String,
    /// Request target of the upgrade, without query (`/ws/bi/revenue-intelligence/loc-1`).
    pub path: String,
}

/// Every stream of a run: channels × locations `{prefix}1..={prefix}{n}`, channel-major.
pub fn build_streams(
    channels: &[&str],
    locations: usize,
    prefix: &str,
) -> Result<Vec<Stream>, StreamError> {
    if locations == 0 {
        return Err(StreamError::NoLocation);
    }
    let mut out = Vec::with_capacity(channels.len() * locations);
    for channel in channels {
        let seg =
            channel_path(channel).ok_or_else(|| StreamError::UnknownChannel((*channel).into()))?;
        for l in 1..=locations {
            let location = format!("{prefix}{l}");
            if !valid_location_id(&location) {
                return Err(StreamError::BadLocation(location));
            }
            out.push(Stream {
                channel: (*channel).to_owned(),
                path: format!("/ws/{seg}/{location}"),
                location,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_counts_lists_and_all() {
        assert_eq!(parse_channels("1").unwrap(), vec!["dashboard"]);
        assert_eq!(parse_channels("all").unwrap().len(), 6);
        assert_eq!(
            parse_channels("bot-performance, analytics-advanced").unwrap(),
            vec!["bot-performance", "analytics-advanced"]
        );
        assert!(matches!(
            parse_channels("7"),
            Err(StreamError::BadChannelCount(_))
        ));
        assert!(matches!(
            parse_channels("0"),
            Err(StreamError::BadChannelCount(_))
        ));
        assert!(matches!(
            parse_channels("nope"),
            Err(StreamError::UnknownChannel(_))
        ));
        assert!(matches!(
            parse_channels("dashboard,dashboard"),
            Err(StreamError::DuplicateChannel(_))
        ));
    }

    #[test]
    fn paths_follow_the_contract() {
        let s = build_streams(&["revenue-intelligence", "analytics-advanced"], 2, "loc-").unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].path, "/ws/bi/revenue-intelligence/loc-1");
        assert_eq!(s[3].path, "/ws/analytics/advanced/loc-2");
        assert_eq!(
            channel_of_path("analytics/advanced"),
            Some("analytics-advanced")
        );
        assert!(build_streams(&["dashboard"], 1, "bad/").is_err());
    }
}
