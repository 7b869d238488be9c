// Test harness: a real `bistream` process on 127.0.0.1, HTTP publishing, HS256
// tokens minted with node:crypto, and a WebSocket class that records every
// connection attempt (URL and time) so tests can see reconnects from outside.
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';

const here = dirname(fileURLToPath(import.meta.url));
export const REPO = resolve(here, '../../..');
export const BIN = process.env.BISTREAM_BIN ?? resolve(REPO, 'target/debug/bistream');

const servers = new Set();
process.on('exit', () => {
  for (const s of servers) s.proc.kill('SIGKILL');
});

/**
 * Starts `bistream --listen 127.0.0.1:<port> ...args` and waits for its banner
 * `listening on 127.0.0.1:PORT`. `port` 0 lets the kernel choose.
 */
export async function startServer({ args = [], env = {}, port = 0 } = {}) {
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: run \`cargo build --bin bistream\` first`);
  const proc = spawn(BIN, ['--listen', `127.0.0.1:${port}`, '--threads', '1', ...args], {
    env: { ...process.env, RUST_LOG: 'info', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const server = { proc, port: 0, log: [], exited: false };
  servers.add(server);
  proc.on('exit', () => {
    server.exited = true;
    servers.delete(server);
  });
  await new Promise((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`no banner from bistream:\n${server.log.join('\n')}`)), 15_000);
    let buf = '';
    proc.stderr.setEncoding('utf8');
    proc.stderr.on('data', (chunk) => {
      buf += chunk;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (server.log.length < 2000) server.log.push(line);
        const m = /listening on 127\.0\.0\.1:(\d+)/.exec(line);
        if (m && !server.port) {
          server.port = Number(m[1]);
          clearTimeout(timer);
          res();
        }
      }
    });
    proc.on('exit', (code) => {
      clearTimeout(timer);
      rej(new Error(`bistream exited with ${code}:\n${server.log.join('\n')}`));
    });
  });
  server.ws = `ws://127.0.0.1:${server.port}`;
  server.http = `http://127.0.0.1:${server.port}`;
  server.kill = async (signal = 'SIGKILL') => {
    if (server.exited) return;
    const gone = new Promise((r) => proc.once('exit', r));
    proc.kill(signal);
    await gone;
  };
  return server;
}

/** POST /api/events; returns the HTTP status. */
export async function publish(server, events, token) {
  const headers = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(`${server.http}/api/events`, { method: 'POST', headers, body: JSON.stringify(events) });
  await res.arrayBuffer();
  return res.status;
}

/** The value of one sample of `/metrics`, e.g. metric(s, 'bistream_handshake_failures_total{status="401"}'). */
export async function metric(server, sample) {
  const text = await (await fetch(`${server.http}/metrics`)).text();
  for (const line of text.split('\n')) {
    if (line.startsWith(`${sample} `)) return Number(line.slice(sample.length + 1));
  }
  return 0;
}

const b64url = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

/** An HS256 JWT (docs/protocol.md §4). `ttlSec` sets `exp` from now. */
export function mintToken(secret, claims = {}, ttlSec = 300) {
  const now = Math.floor(Date.now() / 1000);
  const payload = { sub: 'js-test', exp: now + ttlSec, ...claims };
  const head = b64url({ alg: 'HS256', typ: 'JWT' });
  const body = b64url(payload);
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function waitFor(what, predicate, timeoutMs = 5000, stepMs = 20) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await predicate();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(stepMs);
  }
}

/** A `ws` WebSocket class that logs `{ url, at, client }` for every connection attempt. */
export function recordingWebSocket(log, client = 0) {
  return class RecordingWebSocket extends WebSocket {
    constructor(url, ...rest) {
      log.push({ url: String(url), at: performance.now(), client });
      super(url, ...rest);
    }
  };
}

/** Collects a subscription's events, states, recoveries and errors. */
export function record(sub) {
  const r = { events: [], states: [], recovered: [], snapshots: [], errors: [] };
  sub.on('event', (e) => r.events.push(e));
  sub.on('state', (s) => r.states.push({ ...s, at: performance.now() }));
  sub.on('recovered', (x) => r.recovered.push(x));
  sub.on('snapshot', (x) => r.snapshots.push(x));
  sub.on('error', (e) => r.errors.push(e));
  return r;
}
