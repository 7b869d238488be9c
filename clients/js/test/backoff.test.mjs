// The reconnect delay: full jitter between 0.5 s and min(20 s, 0.5 s × 2^(attempt+1)).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { reconnectDelay } from '../dist/index.js';

test('the window of each attempt: 0.5–2 s, 0.5–4 s, 0.5–8 s, 0.5–16 s, then 0.5–20 s', () => {
  const windows = [1, 2, 3, 4, 5, 6, 50].map((a) => [reconnectDelay(a, () => 0), reconnectDelay(a, () => 1)]);
  assert.deepEqual(windows, [
    [500, 2000],
    [500, 4000],
    [500, 8000],
    [500, 16000],
    [500, 20000],
    [500, 20000],
    [500, 20000],
  ]);
});

test('full jitter: uniform over the whole window', () => {
  const n = 20_000;
  const xs = Array.from({ length: n }, () => reconnectDelay(3));
  assert.ok(xs.every((x) => x >= 500 && x <= 8000));
  const mean = xs.reduce((a, b) => a + b, 0) / n;
  assert.ok(Math.abs(mean - 4250) < 100, `mean ${mean}, want ≈ 4250`);
  const quarters = [0, 0, 0, 0];
  for (const x of xs) quarters[Math.min(3, Math.floor(((x - 500) / 7500) * 4))]++;
  for (const q of quarters) assert.ok(Math.abs(q - n / 4) < n / 25, `quarters ${quarters}`);
});

test('custom bounds', () => {
  assert.equal(reconnectDelay(1, () => 1, { minMs: 100, maxMs: 300 }), 300);
  assert.equal(reconnectDelay(9, () => 0.5, { minMs: 100, maxMs: 300 }), 200);
});

test('the package resolves by its name through `exports` (self-reference)', async () => {
  const pkg = await import('bistream-client');
  for (const name of ['Subscription', 'subscribe', 'BistreamError', 'CHANNELS', 'reconnectDelay']) {
    assert.ok(name in pkg, name);
  }
  assert.deepEqual(
    pkg.CHANNELS.map((c) => c.id),
    ['dashboard', 'revenue-intelligence', 'bot-performance', 'business-intelligence', 'ai-concierge', 'analytics-advanced'],
  );
});
