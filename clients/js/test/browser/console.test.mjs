// The console page in Debian's Chromium, driven by playwright-core, against the
// real server started with --console: nothing is loaded from anywhere but the
// server, a published event shows within a second, the stats show, the page's
// client survives a server restart on the same port, and with auth on the token
// stays in memory. Writes target/console.png for people to look at.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { chromium } from 'playwright-core';
import { mintToken, publish, REPO, startServer, waitFor } from '../helpers.mjs';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

function ensureChromium() {
  if (existsSync(CHROMIUM)) return;
  // Debian's packages, through the project's one installer; never a browser
  // build downloaded by a tool.
  const script = new URL('../../../../tests/setup/ensure-apt.sh', import.meta.url).pathname;
  execFileSync('bash', [script, 'chromium:chromium', 'chromium-driver:chromedriver'], { stdio: 'inherit' });
}

const profiles = [];
async function browse(server) {
  const dir = mkdtempSync(join(tmpdir(), 'bistream-chromium-'));
  profiles.push(dir);
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    viewport: { width: 1360, height: 860 },
  });
  const origin = server.http;
  const foreign = [];
  const requests = [];
  const sockets = [];
  const problems = [];
  // Every HTTP request the page makes passes here: anything not for the server is recorded and refused.
  await context.route('**/*', (route) => {
    const url = route.request().url();
    requests.push(url);
    if (new URL(url).origin === origin) return route.continue();
    foreign.push(url);
    return route.abort();
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('websocket', (ws) => sockets.push(ws.url()));
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    // The browser logs each failed handshake or fetch while the server is down, and the
    // 401 that tells the page auth is on: expected. CSP violations and script errors are not.
    if (m.type() === 'error' && !/WebSocket connection to .* failed|Failed to load resource/.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  return { context, page, foreign, requests, sockets, problems, origin };
}

const text = (page, sel) => page.locator(sel).innerText();

before(() => ensureChromium());
after(() => {
  for (const d of profiles) rmSync(d, { recursive: true, force: true });
});

test('the console: local only, live events, stats, survives a restart; screenshot', async (t) => {
  let server = await startServer({ args: ['--console'] });
  const port = server.port;
  t.after(() => server.kill());
  const b = await browse(server);
  t.after(() => b.context.close());
  const { page } = b;

  const res = await page.goto(`${server.http}/console`);
  assert.equal(res.status(), 200);
  const csp = res.headers()['content-security-policy'];
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /connect-src 'self'/);
  assert.equal(res.headers()['x-content-type-options'], 'nosniff');

  await waitFor('the stream to open', async () => (await text(page, '#st-state')) === 'open', 5000, 50);
  assert.equal(await text(page, '#st-stream'), 'dashboard / loc-1');
  assert.equal(await page.locator('#channel-list button').count(), 6);

  // A published event appears within a second.
  const started = performance.now();
  assert.equal(
    await publish(server, {
      channel: 'dashboard',
      location_id: 'loc-1',
      event_type: 'REVENUE_UPDATE',
      data: { revenue_today: 12345.67, orders: 57, currency: 'USD' },
    }),
    202,
  );
  await page.locator('#event-rows tr', { hasText: 'REVENUE_UPDATE' }).first().waitFor({ timeout: 1000 });
  const shownAfter = performance.now() - started;
  t.diagnostic(`published → shown in the page: ${Math.round(shownAfter)} ms`);
  assert.ok(shownAfter < 1000);
  assert.match(await text(page, '#event-rows tr:first-child'), /12345\.67/);
  assert.equal(await text(page, '#st-seq'), '1');

  // The stats header: this page's own connection, and deliveries once events flow.
  await waitFor('connections in the stats', async () => (await text(page, '#stat-connections')) === '1', 3000, 50);
  await waitFor('the dashboard count', async () => (await text(page, '[data-channel="dashboard"] .count')) === '1', 3000, 50);
  for (let i = 0; i < 5; i++) {
    await publish(server, { channel: 'dashboard', location_id: 'loc-1', event_type: 'ORDER_CREATED', data: { order: 1000 + i } });
  }
  await waitFor('deliveries per second', async () => Number(await text(page, '#stat-deliveries')) > 0, 3000, 50);
  await waitFor('a p99', async () => /ms$/.test(await text(page, '#stat-p99')), 3000, 50);
  assert.match(await text(page, '#server-text'), /up · open/);

  // Restart on the same port: the page's client reconnects, resumes, and says the resume was incomplete.
  await server.kill('SIGKILL');
  await waitFor('the page to notice', async () => /retry in|connecting/.test(await text(page, '#st-state')), 5000, 50);
  await waitFor('the stats to notice', async () => (await text(page, '#server-text')) === 'unreachable', 3000, 50);
  server = await startServer({ args: ['--console'], port });
  await waitFor('open again', async () => (await text(page, '#st-state')) === 'open', 10_000, 50);
  assert.match(await text(page, '#st-resume'), /incomplete: new epoch/);
  assert.ok(b.sockets.length >= 2, `${b.sockets.length} WebSocket connections`);
  assert.match(b.sockets.at(-1), /since=6&epoch=/);

  const demo = [
    ['REVENUE_UPDATE', { revenue_today: 18230.4, orders: 81, currency: 'USD' }],
    ['COMMISSION_EARNED', { agent: 'a-17', commission: 1250.5 }],
    ['BOT_RESOLUTION', { bot: 'concierge', resolved: 412, escalated: 9 }],
    ['ORDER_CREATED', { order: 'o-88231', amount: 249.99, items: 3 }],
    ['KPI_SNAPSHOT', { conversion: 0.043, aov: 87.2, sessions: 1912 }],
    ['REVENUE_UPDATE', { revenue_today: 18479.9, orders: 82, currency: 'USD' }],
  ];
  for (const [event_type, data] of demo) {
    assert.equal(await publish(server, { channel: 'dashboard', location_id: 'loc-1', event_type, data }), 202);
  }
  await waitFor('the new events', async () => (await page.locator('#event-rows tr:not(.divider)').count()) === 6 + demo.length, 3000, 50);
  assert.match(await text(page, '#event-rows tr.divider'), /resume incomplete: new epoch/);
  assert.match(await text(page, '#event-rows tr:first-child'), /18479\.9/);
  assert.equal(await text(page, '#st-seq'), String(demo.length));
  await waitFor('stats back', async () => /up/.test(await text(page, '#server-text')), 3000, 50);
  await waitFor('deliveries after the restart', async () => Number(await text(page, '#stat-deliveries')) > 0, 3000, 50);

  mkdirSync(join(REPO, 'target'), { recursive: true });
  await page.screenshot({ path: join(REPO, 'target/console.png') });

  // Nothing left the server: every request and WebSocket went to its origin.
  assert.deepEqual(b.foreign, []);
  assert.ok(b.requests.some((u) => u.endsWith('/console/app.js')));
  for (const u of b.sockets) assert.equal(new URL(u).host, `127.0.0.1:${port}`);
  assert.deepEqual(b.problems, []);
});

test('the console with auth on: asks for a token, keeps it in memory only, stats need it', async (t) => {
  const secret = 'console-browser-test-secret-0123456789';
  const server = await startServer({ args: ['--console'], env: { JWT_SECRET_KEY: secret } });
  t.after(() => server.kill());
  const b = await browse(server);
  t.after(() => b.context.close());
  const { page } = b;

  assert.equal((await fetch(`${server.http}/api/stats`)).status, 401);
  await page.goto(`${server.http}/console`);
  await page.locator('#token-field').waitFor({ state: 'visible', timeout: 3000 });
  assert.match(await text(page, '#server-text'), /token needed/);
  assert.equal(await text(page, '#st-state'), 'idle');

  const token = mintToken(secret, { locations: ['loc-1'] });
  await page.fill('#token', token);
  await page.click('#connect');
  await waitFor('open', async () => (await text(page, '#st-state')) === 'open', 5000, 50);
  await waitFor('stats with the token', async () => (await text(page, '#stat-connections')) === '1', 3000, 50);
  assert.match(await text(page, '#server-text'), /auth on/);
  await publish(server, { channel: 'dashboard', location_id: 'loc-1', event_type: 'SECURED', data: 1 }, mintToken(secret, { scope: 'publish' }));
  await page.locator('#event-rows tr', { hasText: 'SECURED' }).waitFor({ timeout: 1000 });

  // Only in memory: not in the URL, not in storage, not in a cookie.
  const kept = await page.evaluate(() => ({
    href: location.href,
    local: localStorage.length,
    session: sessionStorage.length,
    cookie: document.cookie,
  }));
  assert.equal(kept.href, `${server.http}/console`);
  assert.equal(kept.local, 0);
  assert.equal(kept.session, 0);
  assert.equal(kept.cookie, '');
  assert.deepEqual(b.foreign, []);
  assert.deepEqual(b.problems, []);
});
