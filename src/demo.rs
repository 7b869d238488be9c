//! `--demo`: plausible BI events for a few locations every second, so a new
//! user sees a stream the moment they connect.

use std::time::Duration;

use serde_json::json;
use serde_json::value::RawValue;

use crate::channel::Channel;
use crate::http::publish::{ChannelSel, LocationSel, PublishEvent};
use crate::hub::channels::{PublisherHandle, ToPublisher};

pub const LOCATIONS: [&str; 3] = ["loc-1", "loc-2", "loc-3"];

/// A small xorshift generator: demo figures need variety, not cryptography.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        let f = (self.next() % 1_000_000) as f64 / 1_000_000.0;
        ((lo + f * (hi - lo)) * 100.0).round() / 100.0
    }
}

fn event(
    channel: Channel,
    location: &str,
    event_type: &str,
    data: serde_json::Value,
) -> Option<PublishEvent> {
    Some(PublishEvent {
        channels: ChannelSel::List(vec![channel]),
        location: LocationSel::One(location.into()),
        event_type: event_type.into(),
        key: None,
        data: RawValue::from_string(data.to_string()).ok()?,
    })
}

/// One second's worth of events.
fn tick(rng: &mut Rng, n: u64) -> Vec<PublishEvent> {
    let mut out = Vec::new();
    for loc in LOCATIONS {
        let revenue = rng.range(8_000.0, 25_000.0);
        out.extend(event(
            Channel::Dashboard,
            loc,
            "REVENUE_UPDATE",
            json!({
            "revenue_today": revenue, "orders": 40 + rng.next() % 60, "currency": "USD"}),
        ));
        out.extend(event(
            Channel::RevenueIntelligence,
            loc,
            "REVENUE_FORECAST",
            json!({
            "forecast_month": revenue * 30.0, "confidence": rng.range(0.7, 0.98)}),
        ));
        out.extend(event(Channel::BusinessIntelligence, loc, "COMMISSION_UPDATE", json!({
            "agent_id": format!("agent-{}", rng.next() % 12), "commission": rng.range(50.0, 1500.0)})));
        out.extend(event(
            Channel::BotPerformance,
            loc,
            "BOT_PERFORMANCE",
            json!({
            "bot": "sales-assistant", "conversations": 100 + rng.next() % 400,
            "resolution_rate": rng.range(0.6, 0.95), "avg_response_ms": 200 + rng.next() % 900}),
        ));
        out.extend(event(Channel::AiConcierge, loc, "CONCIERGE_SESSION", json!({
            "session_id": format!("s-{n}-{}", rng.next() % 1000), "active_sessions": rng.next() % 30,
            "satisfaction": rng.range(3.5, 5.0)})));
        out.extend(event(
            Channel::AnalyticsAdvanced,
            loc,
            "ANALYTICS_SNAPSHOT",
            json!({
            "visitors": 500 + rng.next() % 2000, "conversion_rate": rng.range(0.01, 0.08)}),
        ));
    }
    out
}

pub fn spawn(publisher: PublisherHandle) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("bistream-demo".into())
        .spawn(move || {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ crate::clock::wall_ms());
            for n in 0.. {
                match publisher.try_send(ToPublisher::Publish(tick(&mut rng, n))) {
                    Err(crossbeam_channel::TrySendError::Disconnected(_)) => return,
                    _ => std::thread::sleep(Duration::from_secs(1)),
                }
            }
        })
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tick_covers_every_channel_and_location() {
        let evs = tick(&mut Rng(1), 0);
        assert_eq!(evs.len(), 6 * LOCATIONS.len());
        for e in &evs {
            assert!(serde_json::from_str::<serde_json::Value>(e.data.get()).is_ok());
        }
    }
}
