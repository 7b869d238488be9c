// Against the real server: 200 clients, the server killed and started again on
// the same port. The clients come back spread out (no reconnect storm), resume
// with since/epoch, are told complete:false (the new process has a new epoch),
// and receive what is published afterwards.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Subscription } from '../dist/index.js';
import { publish, record, recordingWebSocket, startServer, waitFor } from './helpers.mjs';

const CLIENTS = 200;

test(`${CLIENTS} clients survive a restart: spread reconnects, resume, complete:false across the epoch change`, async (t) => {
  let server = await startServer();
  const port = server.port;
  t.after(() => server.kill());
  const attempts = [];
  const subs = [];
  const recs = [];
  for (let i = 0; i < CLIENTS; i++) {
    const sub = new Subscription({
      url: server.ws,
      channel: 'dashboard',
      location: 'restart-1',
      WebSocket: recordingWebSocket(attempts, i),
    });
    subs.push(sub);
    recs.push(record(sub));
  }
  t.after(() => subs.forEach((s) => s.close()));
  await Promise.all(subs.map((s) => s.whenOpen()));
  const firstEpoch = subs[0].established.epoch;
  assert.equal(await publish(server, { channel: 'dashboard', location_id: 'restart-1', event_type: 'TICK', data: { n: 1 } }), 202);
  await waitFor('event 1 everywhere', () => recs.every((r) => r.events.length === 1));
  const before = subs.map((s) => s.position);
  assert.ok(before.every((p) => p.seq === 1 && p.epoch === firstEpoch));

  const killedAt = performance.now();
  await server.kill('SIGKILL');
  server = await startServer({ port });
  await waitFor('every client open again', () => subs.every((s) => s.state === 'open'), 15_000, 50);

  // The first reconnect attempt of each client: its second connection attempt.
  const firstRetry = new Map();
  for (const a of attempts) {
    const seen = firstRetry.get(a.client);
    if (seen === undefined) firstRetry.set(a.client, null);
    else if (seen === null) firstRetry.set(a.client, a);
  }
  const retries = [...firstRetry.values()];
  assert.equal(retries.length, CLIENTS);
  assert.ok(retries.every((a) => a !== null));
  const times = retries.map((a) => a.at - killedAt);
  const spread = Math.max(...times) - Math.min(...times);
  const buckets = new Map();
  for (const ms of times) buckets.set(Math.floor(ms / 100), (buckets.get(Math.floor(ms / 100)) ?? 0) + 1);
  const peak = Math.max(...buckets.values());
  t.diagnostic(
    `first reconnects: ${Math.round(Math.min(...times))}–${Math.round(Math.max(...times))} ms after the kill, spread ${Math.round(spread)} ms, busiest 100 ms: ${peak} of ${CLIENTS}`,
  );
  assert.ok(Math.min(...times) >= 490, `no client retries before the 0.5 s floor (${Math.min(...times)} ms)`);
  assert.ok(spread >= 1000, `first reconnects spread over ${spread} ms, want ≥ 1000`);
  assert.ok(peak <= CLIENTS / 4, `no burst: ${peak} of ${CLIENTS} in one 100 ms window`);

  // Every reconnect resumed from where the client was, and was told the history is gone.
  for (const a of retries) assert.match(a.url, new RegExp(`since=1&epoch=${firstEpoch}`));
  for (const r of recs) {
    assert.equal(r.recovered.length, 1);
    assert.equal(r.recovered[0].complete, false);
    assert.equal(r.recovered[0].epochChanged, true);
    assert.equal(r.recovered[0].since, 1);
  }
  const newEpoch = subs[0].established.epoch;
  assert.notEqual(newEpoch, firstEpoch);
  assert.ok(subs.every((s) => s.position.epoch === newEpoch && s.position.seq === 0));

  assert.equal(await publish(server, { channel: 'dashboard', location_id: 'restart-1', event_type: 'TICK', data: { n: 2 } }), 202);
  await waitFor('event 2 everywhere', () => recs.every((r) => r.events.length === 2));
  assert.ok(recs.every((r) => r.events[1].seq === 1 && r.events[1].epoch === newEpoch && r.events[1].data.n === 2));
  assert.ok(recs.every((r) => r.errors.every((e) => !e.final)));
});
