//! Criterion benches of the hot paths, each with a `Throughput`:
//! request-head parsing, PROXY header parsing, encoding one event, fanning one event out to 10,000
//! queued connections (no sockets), and draining a loop's inbox.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::value::RawValue;

use bistream::channel::Channel;
use bistream::http::head::{parse_head, HeadStatus};
use bistream::hub::event::{encode_event, Delivery, EventParts};
use bistream::hub::subscriptions::{ConnRef, Subscriptions};
use bistream::proxy_protocol::{self, ProxyStatus, DEFAULT_MAX_LEN};
use bistream::ws::outbound::Outbound;

const UPGRADE: &[u8] = b"GET /ws/bi/revenue-intelligence/loc-1?token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.sig&events=REVENUE_UPDATE HTTP/1.1\r\n\
Host: bi.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
Origin: https://app.example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0\r\n\
Accept-Encoding: gzip, deflate\r\nAccept-Language: en-US,en;q=0.9\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";

fn head_parsing(c: &mut Criterion) {
    let mut g = c.benchmark_group("request_head");
    g.throughput(Throughput::Bytes(UPGRADE.len() as u64));
    g.bench_function("parse_upgrade", |b| {
        b.iter(|| match parse_head(black_box(UPGRADE), 8192) {
            Ok(HeadStatus::Complete { len, .. }) => len,
            _ => unreachable!("the bench head is complete"),
        })
    });
    g.finish();
}

/// What nginx (v1, IPv6) and HAProxy (v2, IPv4 with an authority TLV) send.
const PROXY_V1: &[u8] = b"PROXY TCP6 2001:db8:85a3::8a2e:370:7334 2001:db8::1 51234 443\r\n";
const PROXY_V2: &[u8] = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x19\
\xc0\xa8\x00\x01\x0a\x00\x00\x07\xdc\x04\x01\xbb\x02\x00\x0abi.example";

fn proxy_header(c: &mut Criterion) {
    let mut g = c.benchmark_group("proxy_header");
    for (name, header) in [("v1_tcp6", PROXY_V1), ("v2_tcp4_authority", PROXY_V2)] {
        g.throughput(Throughput::Bytes(header.len() as u64));
        g.bench_function(name, |b| {
            b.iter(
                || match proxy_protocol::parse(black_box(header), DEFAULT_MAX_LEN) {
                    Ok(ProxyStatus::Complete { len, .. }) => len,
                    other => unreachable!("the bench header is complete: {other:?}"),
                },
            )
        });
    }
    g.finish();
}

fn data() -> Box<RawValue> {
    RawValue::from_string(
        r#"{"revenue_today":12345.67,"orders":57,"currency":"USD","agent_id":"agent-7","commission":1250.5}"#
            .to_string(),
    )
    .expect("valid JSON")
}

fn event_encoding(c: &mut Criterion) {
    let d = data();
    let mut g = c.benchmark_group("event");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode_json_and_frame", |b| {
        b.iter(|| {
            encode_event(&EventParts {
                channel: Channel::RevenueIntelligence,
                location: black_box("loc-1"),
                event_type: "REVENUE_UPDATE",
                key: None,
                seq: black_box(42),
                published_at_ms: 1_764_190_000_456,
                data: &d,
            })
        })
    });
    g.finish();
}

/// The per-recipient work of a delivery: index lookup, filter, shared push.
fn fan_out(subs: &Subscriptions, queues: &mut [Outbound], d: &Delivery) -> usize {
    let mut n = 0;
    for c in subs.get(d.stream) {
        let q = &mut queues[c.key as usize];
        if q.push(d.frame.clone(), d.stamp, 1 << 20).is_ok() {
            n += 1;
        }
    }
    n
}

fn delivery(stream: u64, frame: &Bytes) -> Delivery {
    Delivery {
        stream,
        seq: 1,
        event_type: Arc::from("REVENUE_UPDATE"),
        key: Arc::from("REVENUE_UPDATE"),
        frame: frame.clone(),
        stamp: 1,
    }
}

fn sample_frame() -> Bytes {
    encode_event(&EventParts {
        channel: Channel::Dashboard,
        location: "loc-1",
        event_type: "REVENUE_UPDATE",
        key: None,
        seq: 1,
        published_at_ms: 1,
        data: &data(),
    })
}

/// A conflating connection's push: 100 keys, the older unwritten event of the
/// same key dropped each time (the queue never grows past the keys).
fn conflation(c: &mut Criterion) {
    let frame = sample_frame();
    let keys: Vec<Arc<str>> = (0..100).map(|i| Arc::from(format!("kpi-{i}"))).collect();
    let mut q = Outbound::default();
    q.conflate();
    let mut g = c.benchmark_group("conflation");
    g.throughput(Throughput::Elements(1));
    let mut i = 0;
    g.bench_function("push_conflated_100_keys", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            q.push_conflated(frame.clone(), 1, &keys[i], 1 << 20)
        })
    });
    g.finish();
}

fn fanout(c: &mut Criterion) {
    let frame = sample_frame();
    let mut g = c.benchmark_group("fanout");
    for n in [1_000usize, 10_000] {
        let mut subs = Subscriptions::default();
        for key in 0..n as u32 {
            subs.add(7, ConnRef { key, gen: 1 });
        }
        let mut queues: Vec<Outbound> = (0..n).map(|_| Outbound::default()).collect();
        let d = delivery(7, &frame);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(
            BenchmarkId::new("one_event_to_queued_connections", n),
            &n,
            |b, _| {
                b.iter(|| {
                    let sent = fan_out(&subs, &mut queues, &d);
                    for q in queues.iter_mut() {
                        q.drop_unstarted();
                    }
                    sent
                })
            },
        );
    }
    g.finish();
}

fn inbox(c: &mut Criterion) {
    // 64 batches of 16 deliveries across 8 streams of 100 subscribers each.
    let frame = sample_frame();
    let mut subs = Subscriptions::default();
    for key in 0..800u32 {
        subs.add(u64::from(key / 100), ConnRef { key, gen: 1 });
    }
    let mut queues: Vec<Outbound> = (0..800).map(|_| Outbound::default()).collect();
    let (tx, rx) = crossbeam_channel::bounded::<Vec<Delivery>>(64);
    let mut g = c.benchmark_group("inbox");
    g.throughput(Throughput::Elements(64 * 16 * 100));
    g.bench_function("drain_64_batches", |b| {
        b.iter(|| {
            for i in 0..64u64 {
                let batch = (0..16).map(|j| delivery((i + j) % 8, &frame)).collect();
                let _ = tx.try_send(batch);
            }
            let mut sent = 0;
            while let Ok(batch) = rx.try_recv() {
                for d in &batch {
                    sent += fan_out(&subs, &mut queues, d);
                }
            }
            for q in queues.iter_mut() {
                q.drop_unstarted();
            }
            sent
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = head_parsing, proxy_header, event_encoding, fanout, inbox, conflation
}
criterion_main!(benches);
