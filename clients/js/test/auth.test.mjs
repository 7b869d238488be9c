// Against the real server with JWT_SECRET_KEY set: the token function is called
// before every (re)connect, an expired token is replaced, refusals (401, 403) are
// final errors with no retry loop, and the token can travel in a header.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import WebSocket from 'ws';
import { Subscription } from '../dist/index.js';
import { metric, mintToken, publish, record, recordingWebSocket, sleep, startServer, waitFor } from './helpers.mjs';

const SECRET = 'js-client-tests-secret-0123456789abcdef';
const ENV = { JWT_SECRET_KEY: SECRET };
const ARGS = ['--jwt-leeway', '0s'];
let server;
before(async () => {
  server = await startServer({ env: ENV, args: ARGS });
});
after(() => server?.kill());

const sub = (t, opts) => {
  const s = new Subscription({ url: server.ws, channel: 'dashboard', WebSocket, ...opts });
  t.after(() => s.close());
  return s;
};
const publisher = () => mintToken(SECRET, { scope: 'publish' });

test('the token function is called again before a reconnect (server restarted)', async (t) => {
  const calls = [];
  const log = [];
  const s = sub(t, {
    location: 'auth-1',
    token: async () => {
      calls.push(performance.now());
      return mintToken(SECRET, { locations: ['auth-1'], jti: `call-${calls.length}` });
    },
    WebSocket: recordingWebSocket(log),
  });
  const r = record(s);
  await s.whenOpen();
  assert.equal(calls.length, 1);
  const port = server.port;
  await server.kill('SIGKILL');
  server = await startServer({ env: ENV, args: [...ARGS], port });
  await waitFor('open again', () => s.state === 'open' && log.length === 2, 10_000);
  assert.equal(calls.length, 2);
  const tokens = log.map((a) => new URL(a.url).searchParams.get('token'));
  assert.notEqual(tokens[0], tokens[1], 'the reconnect used the freshly minted token');
  assert.equal(await publish(server, { channel: 'dashboard', location_id: 'auth-1', event_type: 'X' }, publisher()), 202);
  await waitFor('the event', () => r.events.length === 1);
  assert.ok(r.errors.every((e) => !e.final));
});

test('401: a bad token is a final error, and there is no retry loop', async (t) => {
  const before401 = await metric(server, 'bistream_handshake_failures_total{status="401"}');
  const log = [];
  const s = sub(t, { location: 'auth-2', token: mintToken('another-secret-of-at-least-32-bytes!!'), WebSocket: recordingWebSocket(log) });
  const r = record(s);
  await assert.rejects(s.whenOpen(), (e) => e.code === 'unauthorized' && e.status === 401 && e.final === true);
  assert.equal(s.state, 'closed');
  assert.equal(s.error.code, 'unauthorized');
  assert.equal(s.error.serverCode, 'invalid_signature', s.error.message);
  assert.equal(r.errors.length, 1);
  await sleep(2500);
  assert.equal(log.length, 1, 'one handshake, no retries');
  assert.equal((await metric(server, 'bistream_handshake_failures_total{status="401"}')) - before401, 1);
  assert.deepEqual(
    r.states.map((x) => x.state),
    ['closed'],
  );
});

test('403: a token for another location is a final error', async (t) => {
  const log = [];
  const s = sub(t, { location: 'auth-3', token: mintToken(SECRET, { locations: ['elsewhere'] }), WebSocket: recordingWebSocket(log) });
  await assert.rejects(s.whenOpen(), (e) => e.code === 'forbidden' && e.status === 403 && e.final);
  await sleep(1000);
  assert.equal(log.length, 1);
});

test('token expiry: a token function supplies a new token; a fixed token ends with a policy error', async (t) => {
  let minted = 0;
  const fresh = sub(t, {
    location: 'auth-4',
    backoff: { maxMs: 1000 },
    token: () => {
      minted++;
      return mintToken(SECRET, { locations: ['auth-4'] }, 2);
    },
  });
  const fixed = sub(t, { location: 'auth-4', token: mintToken(SECRET, { locations: ['auth-4'] }, 2) });
  const rf = record(fresh);
  const rx = record(fixed);
  await Promise.all([fresh.whenOpen(), fixed.whenOpen()]);
  await waitFor('the fixed token to end its subscription', () => fixed.state === 'closed', 8000, 50);
  assert.equal(fixed.error.code, 'policy');
  assert.equal(fixed.error.closeCode, 1008);
  assert.match(fixed.error.message, /token expired/);
  await waitFor('the function to be called again', () => minted >= 2 && fresh.state === 'open', 8000, 50);
  assert.ok(rf.states.some((s) => s.disconnect?.code === 1008 && s.disconnect?.reason === 'token expired'));
  assert.ok(rf.errors.every((e) => !e.final));
  assert.equal(rx.errors.filter((e) => e.final).length, 1);
});

test("tokenTransport 'header': Authorization: Bearer, no token in the URL", async (t) => {
  const log = [];
  const s = sub(t, {
    location: 'auth-5',
    token: mintToken(SECRET, { locations: ['auth-5'] }),
    tokenTransport: 'header',
    WebSocket: recordingWebSocket(log),
  });
  await s.whenOpen();
  assert.equal(new URL(log[0].url).searchParams.get('token'), null);
});
