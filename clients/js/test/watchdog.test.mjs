// Against the real server: a server that stops answering (SIGSTOP: TCP stays up,
// nothing moves) is detected by the watchdog after 2 × heartbeat_interval_ms, and
// the client resumes once it answers again.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import WebSocket from 'ws';
import { Subscription } from '../dist/index.js';
import { publish, record, startServer, waitFor } from './helpers.mjs';

const HEARTBEAT_MS = 500;

test('a silent server (SIGSTOP) is detected by the watchdog, and the client resumes after SIGCONT', async (t) => {
  const server = await startServer({ args: ['--heartbeat-interval', `${HEARTBEAT_MS}ms`] });
  t.after(async () => {
    server.proc.kill('SIGCONT');
    await server.kill();
  });
  const sub = new Subscription({ url: server.ws, channel: 'analytics-advanced', location: 'wd-1', backoff: { maxMs: 1000 }, WebSocket });
  t.after(() => sub.close());
  const r = record(sub);
  const est = await sub.whenOpen();
  assert.equal(est.heartbeatIntervalMs, HEARTBEAT_MS);
  await publish(server, { channel: 'analytics-advanced', location_id: 'wd-1', event_type: 'A', data: 1 });
  await waitFor('event 1', () => r.events.length === 1);
  // A quiet but healthy stream is not mistaken for a dead one.
  await new Promise((res) => setTimeout(res, 4 * HEARTBEAT_MS));
  assert.equal(sub.state, 'open', 'pings and pongs keep a quiet stream open');

  const stoppedAt = performance.now();
  server.proc.kill('SIGSTOP');
  await waitFor('the watchdog', () => r.states.some((s) => s.disconnect?.kind === 'heartbeat'), 5000, 10);
  const detected = r.states.find((s) => s.disconnect?.kind === 'heartbeat').at - stoppedAt;
  t.diagnostic(`silence detected ${Math.round(detected)} ms after SIGSTOP (heartbeat ${HEARTBEAT_MS} ms)`);
  assert.ok(detected >= HEARTBEAT_MS, `not before the server could have answered (${detected} ms)`);
  assert.ok(detected <= 2 * HEARTBEAT_MS + HEARTBEAT_MS / 2 + 200, `within 2 × heartbeat plus one check (${detected} ms)`);

  server.proc.kill('SIGCONT');
  await waitFor('open again', () => sub.state === 'open' && r.recovered.length === 1, 10_000, 20);
  assert.equal(r.recovered[0].complete, true);
  await publish(server, { channel: 'analytics-advanced', location_id: 'wd-1', event_type: 'A', data: 2 });
  await waitFor('event 2', () => r.events.length === 2);
  assert.deepEqual(
    r.events.map((e) => e.data),
    [1, 2],
  );
});
