// Against the real server: events arrive in order and typed, the async iterator,
// the events filter, and a resume after a dropped
// connection that reports complete:true with nothing lost or repeated.
import assert from 'node:assert/strict';
import { createServer, connect } from 'node:net';
import { after, before, test } from 'node:test';
import WebSocket from 'ws';
import { Subscription } from '../dist/index.js';
import { publish, record, recordingWebSocket, startServer, waitFor } from './helpers.mjs';

let server;
before(async () => {
  server = await startServer();
});
after(async () => {
  await server?.kill();
});

const ev = (location, n, extra = {}) => ({
  channel: 'dashboard',
  location_id: location,
  event_type: 'REVENUE_UPDATE',
  data: { n, revenue: n * 10.5 },
  ...extra,
});

test('events arrive in seq order with their typed data', async (t) => {
  const sub = new Subscription({ url: server.ws, channel: 'dashboard', location: 'ev-1', WebSocket });
  t.after(() => sub.close());
  const r = record(sub);
  const est = await sub.whenOpen();
  assert.equal(est.channel, 'dashboard');
  assert.equal(est.locationId, 'ev-1');
  assert.ok(est.heartbeatIntervalMs > 0);
  assert.equal(await publish(server, [1, 2, 3].map((n) => ev('ev-1', n))), 202);
  await waitFor('3 events', () => r.events.length === 3);
  assert.deepEqual(
    r.events.map((e) => [e.seq, e.eventType, e.data.n, e.data.revenue, e.snapshot, e.epoch]),
    [1, 2, 3].map((n) => [est.lastSeq + n, 'REVENUE_UPDATE', n, n * 10.5, false, est.epoch]),
  );
  assert.ok(r.events.every((e) => e.publishedAt > 1.7e12 && e.channel === 'dashboard' && e.locationId === 'ev-1'));
  assert.deepEqual(sub.position, { seq: est.lastSeq + 3, epoch: est.epoch });
  assert.equal(r.states.at(-1).state, 'open');
  sub.close();
  assert.equal(sub.state, 'closed');
  assert.equal(r.errors.length, 0);
});

test('the async iterator yields events and ends on close()', async (t) => {
  const sub = new Subscription({ url: server.ws, channel: 'bot-performance', location: 'ev-2', WebSocket });
  t.after(() => sub.close());
  await sub.whenOpen();
  // The iterator sees the events emitted after it starts: start it, then publish.
  const seen = [];
  const loop = (async () => {
    for await (const e of sub) {
      seen.push(e.data.n);
      if (seen.length === 4) sub.close();
    }
  })();
  await publish(server, [1, 2, 3, 4].map((n) => ({ ...ev('ev-2', n), channel: 'bot-performance' })));
  await loop;
  assert.deepEqual(seen, [1, 2, 3, 4]);
});

test('the events filter, and setEvents() changes it on the open connection', async (t) => {
  const sub = new Subscription({ url: server.ws, channel: 'dashboard', location: 'ev-3', events: ['A'], WebSocket });
  t.after(() => sub.close());
  const r = record(sub);
  await sub.whenOpen();
  assert.match(sub.url, /events=A(&|$)/);
  await publish(server, [ev('ev-3', 1, { event_type: 'A' }), ev('ev-3', 2, { event_type: 'B' })]);
  await waitFor('A', () => r.events.length === 1);
  sub.setEvents(['B', 'C']);
  await new Promise((res) => setTimeout(res, 100));
  await publish(server, [ev('ev-3', 3, { event_type: 'A' }), ev('ev-3', 4, { event_type: 'B' })]);
  await waitFor('B', () => r.events.length === 2);
  assert.deepEqual(
    r.events.map((e) => e.eventType),
    ['A', 'B'],
  );
  assert.match(sub.url, /events=B,C/);
  sub.close();
});

/** A TCP relay in front of the server that can cut every connection and refuse new ones. */
async function relay(target) {
  const pairs = new Set();
  let blocked = false;
  const srv = createServer((down) => {
    if (blocked) return down.destroy();
    const up = connect(target, '127.0.0.1');
    const pair = { down, up };
    pairs.add(pair);
    const end = () => {
      down.destroy();
      up.destroy();
      pairs.delete(pair);
    };
    down.on('error', end).on('close', end);
    up.on('error', end).on('close', end);
    down.pipe(up);
    up.pipe(down);
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  return {
    url: `ws://127.0.0.1:${srv.address().port}`,
    cut() {
      for (const p of pairs) {
        p.down.destroy();
        p.up.destroy();
      }
      pairs.clear();
    },
    block(v) {
      blocked = v;
    },
    close: () => new Promise((r) => srv.close(r)),
  };
}

test('a dropped connection resumes with since/epoch: complete:true, nothing lost, nothing twice', async (t) => {
  const rl = await relay(server.port);
  const log = [];
  const sub = new Subscription({ url: rl.url, channel: 'dashboard', location: 'ev-5', backoff: { maxMs: 2000 }, WebSocket: recordingWebSocket(log) });
  t.after(() => sub.close());
  const r = record(sub);
  const est = await sub.whenOpen();
  await publish(server, [1, 2].map((n) => ev('ev-5', n)));
  await waitFor('2 events', () => r.events.length === 2);
  rl.block(true);
  rl.cut();
  await waitFor('reconnecting', () => sub.state === 'reconnecting');
  // Published while the client is away: the resume must replay them.
  await publish(server, [3, 4, 5].map((n) => ev('ev-5', n)));
  rl.block(false);
  await waitFor('the replay and a live event', async () => {
    if (r.events.length === 5) await publish(server, [ev('ev-5', 6)]);
    return r.events.length === 6;
  }, 10_000, 50);
  assert.deepEqual(
    r.events.map((e) => e.data.n),
    [1, 2, 3, 4, 5, 6],
  );
  assert.deepEqual(
    r.events.map((e) => e.seq),
    [1, 2, 3, 4, 5, 6].map((n) => est.lastSeq + n),
  );
  const resumeUrl = log.at(-1).url;
  assert.match(resumeUrl, new RegExp(`since=${est.lastSeq + 2}&epoch=${est.epoch}`));
  assert.equal(r.recovered.length, 1);
  assert.deepEqual(r.recovered[0], {
    complete: true,
    fromSeq: est.lastSeq + 3,
    toSeq: est.lastSeq + 5,
    since: est.lastSeq + 2,
    epochChanged: false,
  });
  assert.deepEqual(sub.lastRecovered, r.recovered[0]);
  sub.close();
  await rl.close();
});
