// The parts of the contract the real server cannot show on demand (4010 resync,
// 1012 service restart, snapshot, conflate, a 503 refusal, a server that never
// greets, a browser that sees no ping frames), against a small fake server
// built on the `ws` package that speaks the wire format of docs/protocol.md.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { test } from 'node:test';
import WebSocket, { WebSocketServer } from 'ws';
import { Subscription } from '../dist/index.js';
import { record, sleep, waitFor } from './helpers.mjs';

/**
 * `handle(req)` returns `{ status, body }` to refuse the handshake, `{ destroy: true }`
 * to drop it without an answer, or a function `(ws, url) => void` to accept it.
 */
async function fake(handle) {
  const wss = new WebSocketServer({ noServer: true, autoPong: true });
  const seen = [];
  const http = createServer((req, res) => {
    const h = handle(req);
    res.writeHead(h?.httpStatus ?? 404, { 'content-type': 'application/json' }).end('{}');
  });
  http.on('upgrade', (req, socket, head) => {
    const url = new URL(req.url, 'ws://x');
    seen.push({ url, at: performance.now() });
    const h = handle(req, url);
    if (typeof h === 'function') {
      wss.handleUpgrade(req, socket, head, (ws) => h(ws, url));
    } else if (h.destroy) {
      socket.destroy();
    } else {
      const body = JSON.stringify(h.body ?? { error: 'x', message: 'refused' });
      socket.end(
        `HTTP/1.1 ${h.status} Refused\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
      );
    }
  });
  await new Promise((r) => http.listen(0, '127.0.0.1', r));
  const port = http.address().port;
  return {
    url: `ws://127.0.0.1:${port}`,
    http: `http://127.0.0.1:${port}`,
    seen,
    close: async () => {
      for (const c of wss.clients) c.terminate();
      http.closeAllConnections?.();
      await new Promise((r) => http.close(r));
    },
  };
}

let epochs = 0;
const hello = (ws, { epoch = 'e1', lastSeq = 0, hb = 25_000, conflate } = {}) =>
  ws.send(
    JSON.stringify({
      type: 'BI_CONNECTION_ESTABLISHED',
      connection_id: `c-${++epochs}`,
      channel: 'dashboard',
      location_id: 'loc-1',
      epoch,
      last_seq: lastSeq,
      server_time: Date.now(),
      heartbeat_interval_ms: hb,
      ...(conflate ? { conflate: true } : {}),
    }),
  );
const event = (ws, seq, data, extra = {}) =>
  ws.send(
    JSON.stringify({
      type: 'event',
      channel: 'dashboard',
      location_id: 'loc-1',
      event_type: 'REVENUE_UPDATE',
      seq,
      published_at: Date.now(),
      data,
      ...extra,
    }),
  );

const open = (t, srv, opts = {}) => {
  const s = new Subscription({ url: srv.url, channel: 'dashboard', location: 'loc-1', WebSocket, ...opts });
  t.after(() => s.close());
  t.after(() => srv.close());
  return s;
};

test('close 4010 (resync): reconnect at once with since/epoch; complete:false is reported', async (t) => {
  let n = 0;
  const srv = await fake(() => (ws, url) => {
    n++;
    if (n === 1) {
      hello(ws, { lastSeq: 5 });
      event(ws, 6, 'a');
      event(ws, 7, 'b');
      setTimeout(() => ws.close(4010, 'resync'), 50);
    } else {
      assert.equal(url.searchParams.get('since'), '7');
      assert.equal(url.searchParams.get('epoch'), 'e1');
      hello(ws, { epoch: 'e2', lastSeq: 3 });
      ws.send(JSON.stringify({ type: 'recovered', complete: false, from_seq: null, to_seq: null }));
      event(ws, 4, 'c');
    }
  });
  const s = open(t, srv);
  const r = record(s);
  await waitFor('3 events', () => r.events.length === 3);
  const gap = srv.seen[1].at - srv.seen[0].at;
  const closeState = r.states.find((x) => x.disconnect?.code === 4010);
  assert.equal(closeState.delayMs, 0);
  assert.ok(gap < 400, `reconnected ${gap} ms after the first connect (50 ms open, then at once)`);
  assert.deepEqual(r.recovered, [{ complete: false, fromSeq: null, toSeq: null, since: 7, epochChanged: true }]);
  assert.deepEqual(s.position, { seq: 4, epoch: 'e2' });
  assert.deepEqual(
    r.events.map((e) => [e.seq, e.epoch, e.data]),
    [
      [6, 'e1', 'a'],
      [7, 'e1', 'b'],
      [4, 'e2', 'c'],
    ],
  );
});

test('4010 again right after a 4010: the second waits the backoff (no tight loop)', async (t) => {
  const srv = await fake(() => (ws) => {
    hello(ws);
    setTimeout(() => ws.close(4010, 'resync'), 20);
  });
  const s = open(t, srv);
  const r = record(s);
  await waitFor('two closes', () => r.states.filter((x) => x.state === 'reconnecting').length >= 2);
  const delays = r.states.filter((x) => x.state === 'reconnecting').map((x) => x.delayMs);
  assert.equal(delays[0], 0);
  assert.ok(delays[1] >= 500 && delays[1] <= 4000, `second delay ${delays[1]} (attempt 2: 0.5–4 s)`);
});

test('close 1012 (service restart) and 1001: reconnect after a jittered delay', async (t) => {
  let n = 0;
  const srv = await fake(() => (ws) => {
    n++;
    hello(ws, { lastSeq: 10 });
    if (n === 1) setTimeout(() => ws.close(1012, 'service restart'), 20);
    if (n === 2) setTimeout(() => ws.close(1001, 'going away'), 20);
    if (n === 3) ws.send(JSON.stringify({ type: 'recovered', complete: true, from_seq: null, to_seq: null }));
  });
  const s = open(t, srv, { backoff: { maxMs: 1200 } });
  const r = record(s);
  await waitFor('3rd connection', () => srv.seen.length === 3 && r.recovered.length === 1, 6000);
  const waits = r.states.filter((x) => x.state === 'reconnecting');
  assert.deepEqual(
    waits.map((x) => x.disconnect.code),
    [1012, 1001],
  );
  for (const w of waits) assert.ok(w.delayMs >= 500 && w.delayMs <= 1200, `delay ${w.delayMs}`);
  assert.ok(srv.seen[1].at - srv.seen[0].at >= 500);
  assert.equal(srv.seen[2].url.searchParams.get('since'), '10');
  assert.equal(r.recovered[0].complete, true);
});

test('1008 heartbeat timeout reconnects; any other 1008 is final', async (t) => {
  let n = 0;
  const srv = await fake(() => (ws) => {
    n++;
    hello(ws);
    setTimeout(() => ws.close(1008, n === 1 ? 'heartbeat timeout' : 'too many invalid messages'), 20);
  });
  const s = open(t, srv, { backoff: { maxMs: 600 } });
  const r = record(s);
  await waitFor('closed', () => s.state === 'closed', 5000);
  assert.equal(srv.seen.length, 2);
  assert.equal(s.error.code, 'policy');
  assert.equal(s.error.final, true);
  assert.equal(s.error.closeCode, 1008);
  assert.equal(r.errors.filter((e) => e.final).length, 1);
  await sleep(800);
  assert.equal(srv.seen.length, 2, 'no reconnect after a final close');
});

test('snapshot=1: last values flagged snapshot:true, then the snapshot marker, then live events', async (t) => {
  const srv = await fake(() => (ws, url) => {
    assert.equal(url.searchParams.get('snapshot'), '1');
    hello(ws, { lastSeq: 9 });
    event(ws, 3, { v: 'old' }, { snapshot: true, key: 'k1' });
    event(ws, 9, { v: 'newest' }, { snapshot: true, key: 'k2' });
    ws.send(JSON.stringify({ type: 'snapshot', count: 2, last_seq: 9 }));
    event(ws, 10, { v: 'live' }, { key: 'k1' });
  });
  const s = open(t, srv, { snapshot: true });
  const r = record(s);
  await waitFor('3 events', () => r.events.length === 3);
  assert.deepEqual(
    r.events.map((e) => [e.seq, e.snapshot, e.key]),
    [
      [3, true, 'k1'],
      [9, true, 'k2'],
      [10, false, 'k1'],
    ],
  );
  assert.deepEqual(r.snapshots, [{ count: 2, lastSeq: 9 }]);
  assert.deepEqual(s.position, { seq: 10, epoch: 'e1' });
});

test('snapshot after an incomplete resume: recovered, then last values, then the marker', async (t) => {
  let n = 0;
  const srv = await fake(() => (ws, url) => {
    n++;
    if (n === 1) {
      hello(ws, { lastSeq: 2 });
      ws.send(JSON.stringify({ type: 'snapshot', count: 0, last_seq: 2 }));
      setTimeout(() => ws.terminate(), 20);
      return;
    }
    assert.equal(url.searchParams.get('since'), '2');
    assert.equal(url.searchParams.get('snapshot'), '1');
    hello(ws, { lastSeq: 50 });
    ws.send(JSON.stringify({ type: 'recovered', complete: false, from_seq: null, to_seq: null }));
    event(ws, 48, 'last value', { snapshot: true, key: 'k' });
    ws.send(JSON.stringify({ type: 'snapshot', count: 1, last_seq: 50 }));
    event(ws, 51, 'live');
  });
  const s = open(t, srv, { snapshot: true, backoff: { maxMs: 600 } });
  const r = record(s);
  await waitFor('2 events', () => r.events.length === 2, 4000);
  assert.equal(r.recovered[0].complete, false);
  assert.deepEqual(
    r.events.map((e) => [e.seq, e.snapshot]),
    [
      [48, true],
      [51, false],
    ],
  );
  assert.equal(r.snapshots.length, 2);
});

test('conflate=1: asked for, reported by the greeting, and seq gaps are accepted', async (t) => {
  const srv = await fake(() => (ws, url) => {
    assert.equal(url.searchParams.get('conflate'), '1');
    hello(ws, { conflate: true });
    event(ws, 1, 1, { key: 'a' });
    event(ws, 4, 4, { key: 'a' });
    event(ws, 7, 7, { key: 'b' });
  });
  const s = open(t, srv, { conflate: true, events: ['REVENUE_UPDATE'] });
  const r = record(s);
  const est = await s.whenOpen();
  assert.equal(est.conflate, true);
  await waitFor('3 events', () => r.events.length === 3);
  assert.deepEqual(
    r.events.map((e) => e.seq),
    [1, 4, 7],
  );
  assert.equal(srv.seen[0].url.searchParams.get('events'), 'REVENUE_UPDATE');
  assert.equal(r.errors.length, 0);
});

test('an event repeated by something in between is delivered once', async (t) => {
  const srv = await fake(() => (ws) => {
    hello(ws);
    for (const seq of [1, 2, 2, 1, 3]) event(ws, seq, seq);
  });
  const s = open(t, srv);
  const r = record(s);
  await waitFor('3 events', () => r.events.length === 3);
  await sleep(50);
  assert.deepEqual(
    r.events.map((e) => e.seq),
    [1, 2, 3],
  );
});

test('without ping frames (as in a browser), the client pings and a live server keeps it open; a mute one is dropped', async (t) => {
  let n = 0;
  const pings = [];
  const srv = await fake(() => (ws) => {
    n++;
    const conn = n;
    hello(ws, { hb: 200 });
    // The first connection answers application pings; the second ignores them.
    ws.on('message', (m) => {
      const msg = JSON.parse(String(m));
      pings.push({ conn, msg });
      if (conn === 1 && msg.type === 'ping') ws.send(JSON.stringify({ type: 'pong', server_time: Date.now(), id: msg.id }));
    });
    if (conn === 1) setTimeout(() => ws.close(1012, 'service restart'), 1500);
  });
  const s = open(t, srv, { backoff: { maxMs: 600 } });
  const r = record(s);
  await s.whenOpen();
  await sleep(1300);
  assert.equal(s.state, 'open', 'a server that answers pings stays connected');
  assert.ok(pings.filter((p) => p.conn === 1).length >= 3, `${pings.length} pings in 1.3 s at a 200 ms interval`);
  assert.ok(pings.every((p) => p.msg.type === 'ping' && typeof p.msg.id === 'string'));
  await waitFor('the mute server dropped', () => r.states.some((x) => x.disconnect?.kind === 'heartbeat'), 4000);
  const dropped = r.states.find((x) => x.disconnect?.kind === 'heartbeat');
  const opened = r.states.filter((x) => x.state === 'open')[1];
  const silentFor = dropped.at - opened.at;
  assert.ok(silentFor >= 400 && silentFor < 700, `dropped after ${silentFor} ms of silence (2 × 200 ms)`);
});

test('no greeting within connectTimeoutMs: the attempt is abandoned and retried', async (t) => {
  const srv = await fake(() => () => undefined);
  const s = open(t, srv, { connectTimeoutMs: 300, backoff: { maxMs: 600 } });
  const r = record(s);
  await waitFor('2 attempts', () => srv.seen.length >= 2, 3000);
  assert.equal(r.states.find((x) => x.state === 'reconnecting').disconnect.kind, 'connect_timeout');
});

test('HTTP 503 on the handshake is retried; 401 after it is final, with the server code', async (t) => {
  let n = 0;
  const srv = await fake(() => {
    n++;
    return n === 1
      ? { status: 503, body: { error: 'unavailable', message: 'the connection limit is reached' } }
      : { status: 401, body: { error: 'token_expired', message: 'the token has expired' } };
  });
  const s = open(t, srv, { token: 't', backoff: { maxMs: 600 } });
  const r = record(s);
  await waitFor('closed', () => s.state === 'closed', 3000);
  assert.deepEqual(
    r.errors.map((e) => [e.code, e.status, e.final]),
    [
      ['unavailable', 503, false],
      ['unauthorized', 401, true],
    ],
  );
  assert.equal(s.error.serverCode, 'token_expired');
  assert.match(s.error.message, /the token has expired/);
});

test('a handshake that fails without a visible status (as in a browser): authCheckUrl turns a 401 into a final error', async (t) => {
  const srv = await fake((req) => (req.headers.upgrade ? { destroy: true } : { httpStatus: req.headers.authorization === 'Bearer good' ? 200 : 401 }));
  const bad = open(t, srv, { token: 'bad', authCheckUrl: `${srv.http}/api/stats`, backoff: { maxMs: 600 } });
  await assert.rejects(bad.whenOpen(), (e) => e.code === 'unauthorized' && e.status === 401 && e.final);
  const good = open(t, srv, { token: 'good', authCheckUrl: `${srv.http}/api/stats`, backoff: { maxMs: 600 } });
  const r = record(good);
  await waitFor('retries', () => r.states.filter((x) => x.state === 'reconnecting').length >= 2, 4000);
  assert.ok(r.errors.every((e) => e.code === 'handshake_failed' && !e.final));
});

test('the token function failing is retried, not final', async (t) => {
  let calls = 0;
  const srv = await fake(() => (ws) => hello(ws));
  const s = open(t, srv, {
    backoff: { maxMs: 600 },
    token: async () => {
      calls++;
      if (calls === 1) throw new Error('auth backend down');
      return 'tok';
    },
  });
  const r = record(s);
  await s.whenOpen();
  assert.equal(calls, 2);
  assert.equal(r.errors[0].code, 'token_error');
  assert.equal(srv.seen[0].url.searchParams.get('token'), 'tok');
});

test('a stable connection resets the backoff', async (t) => {
  let n = 0;
  const srv = await fake(() => (ws) => {
    n++;
    hello(ws);
    // 1 and 2 drop at once (unstable); 3 lives past stableAfterMs, then drops.
    setTimeout(() => ws.terminate(), n === 3 ? 400 : 10);
  });
  const s = open(t, srv, { stableAfterMs: 200, backoff: { minMs: 50 }, random: () => 1 });
  const r = record(s);
  await waitFor('4 connections', () => srv.seen.length >= 4, 10_000);
  const waits = r.states.filter((x) => x.state === 'reconnecting').map((x) => [x.attempt, x.delayMs]);
  assert.deepEqual(waits.slice(0, 3), [
    [1, 200],
    [2, 400],
    [1, 200],
  ]);
});

test('setup errors are thrown at once', () => {
  assert.throws(() => new Subscription({ url: 'ws://x', channel: 'nope', location: 'l', WebSocket }), /unknown channel/);
  assert.throws(() => new Subscription({ url: 'ws://x', channel: 'dashboard', location: '../etc', WebSocket }), /location must match/);
  assert.throws(() => new Subscription({ url: 'ftp://x', channel: 'dashboard', location: 'l', WebSocket }), /url must start/);
  assert.throws(() => new Subscription({ url: 'ws://x', channel: 'dashboard', location: 'l', events: ['a b'], WebSocket }), /event type/);
  if (typeof globalThis.WebSocket === 'undefined') {
    assert.throws(
      () => new Subscription({ url: 'ws://x', channel: 'dashboard', location: 'l' }),
      (e) => e.code === 'no_websocket' && /pass one/.test(e.message),
    );
  }
});

test('an async iterator ends with the final error', async (t) => {
  const srv = await fake(() => ({ status: 403, body: { error: 'forbidden', message: 'not your location' } }));
  const s = open(t, srv, { token: 't' });
  const seen = [];
  await assert.rejects(
    (async () => {
      for await (const e of s) seen.push(e);
    })(),
    (e) => e.code === 'forbidden' && e.final && e.status === 403,
  );
  assert.deepEqual(seen, []);
});

test('an async iterator that falls behind keeps the newest events and says so once', async (t) => {
  const srv = await fake(() => (ws) => {
    hello(ws);
    for (let seq = 1; seq <= 5; seq++) event(ws, seq, seq);
  });
  const s = open(t, srv, { iteratorBufferSize: 2 });
  const r = record(s);
  const it = s[Symbol.asyncIterator]();
  await waitFor('5 events', () => r.events.length === 5);
  assert.deepEqual([(await it.next()).value.seq, (await it.next()).value.seq], [4, 5]);
  assert.deepEqual(
    r.errors.map((e) => [e.code, e.final]),
    [['iterator_overflow', false]],
  );
  s.close();
  assert.equal((await it.next()).done, true);
});
