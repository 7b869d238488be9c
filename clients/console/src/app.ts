// The operator console served at /console: one stream at a time through
// bistream-client, and the server's numbers from GET /api/stats every second.
// Everything comes from the same origin (the page's CSP allows nothing else);
// event data is shown with textContent only, never parsed as HTML.
import { BistreamError, CHANNELS, type ChannelId, type StateChange, type StreamEvent, Subscription } from '../../js/src/index.js';

const MAX_ROWS = 200;
const STATS_EVERY_MS = 1000;
const DATA_PREVIEW_CHARS = 400;

interface Stats {
  connections: number;
  connections_by_channel: Record<string, number>;
  deliveries_per_second: number;
  delivery_latency_p99_ms: number | null;
  events_published_per_second: number;
}

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} is missing from the page`);
  return el as T;
};

const ui = {
  channels: $<HTMLUListElement>('channel-list'),
  location: $<HTMLInputElement>('location'),
  events: $<HTMLInputElement>('events'),
  tokenField: $('token-field'),
  token: $<HTMLInputElement>('token'),
  connect: $<HTMLButtonElement>('connect'),
  stream: $('st-stream'),
  state: $('st-state'),
  seq: $('st-seq'),
  epoch: $('st-epoch'),
  resume: $('st-resume'),
  count: $('st-count'),
  message: $('message'),
  rows: $<HTMLTableSectionElement>('event-rows'),
  empty: $('empty'),
  serverState: $('server-state'),
  serverText: $('server-text'),
  statConnections: $('stat-connections'),
  statDeliveries: $('stat-deliveries'),
  statP99: $('stat-p99'),
  statPublished: $('stat-published'),
};

let channel: ChannelId = 'dashboard';
let sub: Subscription | null = null;
let received = 0;
/** The server answered 401 to /api/stats without a token: auth is on. */
let authOn = false;
let retryTimer: ReturnType<typeof setInterval> | null = null;

/** The token lives in this variable and the password field, nowhere else. */
const token = (): string | undefined => ui.token.value.trim() || undefined;

function setText(el: HTMLElement, text: string): void {
  if (el.textContent !== text) el.textContent = text;
}

function setPill(el: HTMLElement, text: string, tone: 'ok' | 'warn' | 'bad' | 'idle'): void {
  setText(el, text);
  el.className = `pill ${tone}`;
}

function showMessage(text: string | null): void {
  ui.message.classList.toggle('hidden', text === null);
  setText(ui.message, text ?? '');
}

function buildChannelList(): void {
  for (const c of CHANNELS) {
    const li = document.createElement('li');
    const b = document.createElement('button');
    b.type = 'button';
    b.dataset['channel'] = c.id;
    const name = document.createElement('span');
    name.className = 'name';
    name.textContent = c.id;
    const path = document.createElement('span');
    path.className = 'path';
    path.textContent = `${c.path}{location}`;
    const n = document.createElement('span');
    n.className = 'count';
    n.textContent = '–';
    b.append(name, n, path);
    b.addEventListener('click', () => {
      channel = c.id;
      markChannel();
      connect();
    });
    li.append(b);
    ui.channels.append(li);
  }
  markChannel();
}

function markChannel(): void {
  for (const b of ui.channels.querySelectorAll<HTMLButtonElement>('button')) {
    const on = b.dataset['channel'] === channel;
    b.classList.toggle('active', on);
    b.setAttribute('aria-current', on ? 'true' : 'false');
  }
}

function disconnect(): void {
  sub?.close();
  sub = null;
  if (retryTimer) clearInterval(retryTimer);
  retryTimer = null;
}

function connect(): void {
  disconnect();
  const location = ui.location.value.trim();
  if (!/^[A-Za-z0-9_.:-]{1,128}$/.test(location)) {
    showMessage('The location must be 1–128 characters of A–Z, a–z, 0–9, _ . : -');
    return;
  }
  const events = ui.events.value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (authOn && !token()) {
    showMessage('This server checks tokens: paste a subscriber token first.');
    ui.token.focus();
    return;
  }
  showMessage(null);
  received = 0;
  ui.rows.replaceChildren();
  ui.empty.classList.remove('hidden');
  setText(ui.count, '0');
  setText(ui.seq, '–');
  setText(ui.epoch, '–');
  setPill(ui.resume, 'none yet', 'idle');
  setText(ui.stream, `${channel} / ${location}`);
  const opts = { channel, location, events, authCheckUrl: '/api/stats' };
  let s: Subscription;
  try {
    // A function, so that a token pasted while the client waits is used on its next try.
    s = new Subscription(token() ? { ...opts, token: () => token() ?? '' } : opts);
  } catch (e) {
    showMessage(String(e instanceof Error ? e.message : e));
    return;
  }
  sub = s;
  s.on('state', (c) => onState(s, c));
  s.on('event', (e) => onEvent(s, e));
  s.on('recovered', (r) => {
    const what = r.complete
      ? `complete (${r.fromSeq === null ? 'nothing missed' : `replayed ${r.fromSeq}–${r.toSeq}`})`
      : r.epochChanged
        ? 'incomplete: new epoch (server restarted)'
        : 'incomplete: history too short';
    setPill(ui.resume, what, r.complete ? 'ok' : 'warn');
    divider(`reconnected from seq ${r.since}: resume ${what}${r.complete ? '' : ' — an app would reload its state here'}`, r.complete);
    updatePosition(s);
  });
  s.on('error', (e: BistreamError) => {
    if (e.final) showMessage(e.message);
  });
  ui.connect.textContent = 'Reconnect';
}

function onState(s: Subscription, c: StateChange): void {
  if (s !== sub) return;
  if (retryTimer) clearInterval(retryTimer);
  retryTimer = null;
  switch (c.state) {
    case 'open':
      setPill(ui.state, 'open', 'ok');
      showMessage(null);
      updatePosition(s);
      break;
    case 'connecting':
      setPill(ui.state, c.attempt > 0 ? `connecting (attempt ${c.attempt + 1})` : 'connecting', 'warn');
      break;
    case 'reconnecting': {
      const until = Date.now() + (c.delayMs ?? 0);
      const why = c.disconnect ? describe(c.disconnect) : 'disconnected';
      const tick = (): void => setPill(ui.state, `${why}; retry in ${Math.max(0, (until - Date.now()) / 1000).toFixed(1)} s`, 'warn');
      tick();
      retryTimer = setInterval(tick, 100);
      break;
    }
    case 'closed':
      setPill(ui.state, c.error ? 'stopped' : 'closed', c.error ? 'bad' : 'idle');
      break;
  }
}

function describe(d: NonNullable<StateChange['disconnect']>): string {
  switch (d.kind) {
    case 'heartbeat':
      return 'server silent';
    case 'connect_timeout':
      return 'no greeting';
    case 'handshake_failed':
      return 'cannot connect';
    case 'refused':
      return `refused (${d.status ?? '?'})`;
    case 'token_error':
      return 'no token';
    case 'closed':
      return `closed ${d.code ?? ''}${d.reason ? ` ${d.reason}` : ''}`.trim();
  }
}

function updatePosition(s: Subscription): void {
  const p = s.position;
  setText(ui.seq, p ? String(p.seq) : '–');
  setText(ui.epoch, p ? p.epoch : '–');
}

function onEvent(s: Subscription, e: StreamEvent): void {
  if (s !== sub) return;
  received++;
  setText(ui.count, String(received));
  updatePosition(s);
  ui.empty.classList.add('hidden');
  const tr = document.createElement('tr');
  if (e.snapshot) tr.className = 'snapshot';
  const when = new Date(e.publishedAt);
  const cells = [
    `${when.toLocaleTimeString(undefined, { hour12: false })}.${String(when.getMilliseconds()).padStart(3, '0')}`,
    String(e.seq),
    e.key ? `${e.eventType} (${e.key})` : e.eventType,
    `${Math.max(0, Date.now() - e.publishedAt)} ms`,
    preview(e.data),
  ];
  const classes = ['c-time mono', 'c-seq mono', 'c-type', 'c-lat mono', 'c-data mono'];
  cells.forEach((text, i) => {
    const td = document.createElement('td');
    td.className = classes[i] ?? '';
    td.textContent = text;
    tr.append(td);
  });
  tr.title = `seq ${e.seq} · epoch ${e.epoch}${e.snapshot ? ' · snapshot (last value)' : ''}`;
  ui.rows.prepend(tr);
  while (ui.rows.rows.length > MAX_ROWS) ui.rows.lastElementChild?.remove();
}

/** A full-width row between the events of two connections. */
function divider(text: string, complete: boolean): void {
  const tr = document.createElement('tr');
  tr.className = complete ? 'divider' : 'divider warn';
  const td = document.createElement('td');
  td.colSpan = 5;
  td.textContent = text;
  tr.append(td);
  ui.rows.prepend(tr);
  ui.empty.classList.add('hidden');
}

function preview(data: unknown): string {
  let s: string;
  try {
    s = JSON.stringify(data) ?? 'null';
  } catch {
    s = String(data);
  }
  return s.length > DATA_PREVIEW_CHARS ? `${s.slice(0, DATA_PREVIEW_CHARS)}…` : s;
}

function fmt(n: number, digits: number): string {
  return n.toLocaleString(undefined, { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

async function pollStats(): Promise<void> {
  const headers: Record<string, string> = {};
  const t = token();
  if (t) headers['Authorization'] = `Bearer ${t}`;
  try {
    const res = await fetch('/api/stats', { headers, cache: 'no-store' });
    if (res.status === 401) {
      authOn = true;
      ui.tokenField.classList.remove('hidden');
      setServer(t ? 'token refused' : 'token needed', 'warn');
      return;
    }
    if (!res.ok) {
      setServer(`stats: HTTP ${res.status}`, 'warn');
      return;
    }
    const s = (await res.json()) as Stats;
    setServer(authOn ? 'up · auth on' : 'up · open (no auth)', 'ok');
    setText(ui.statConnections, fmt(s.connections, 0));
    setText(ui.statDeliveries, fmt(s.deliveries_per_second, 1));
    setText(ui.statP99, s.delivery_latency_p99_ms === null ? '–' : `${fmt(s.delivery_latency_p99_ms, 2)} ms`);
    setText(ui.statPublished, fmt(s.events_published_per_second, 1));
    for (const b of ui.channels.querySelectorAll<HTMLButtonElement>('button')) {
      const n = s.connections_by_channel[b.dataset['channel'] ?? ''];
      const el = b.querySelector<HTMLElement>('.count');
      if (el) setText(el, n === undefined ? '–' : String(n));
    }
  } catch {
    setServer('unreachable', 'bad');
  }
}

function setServer(text: string, tone: 'ok' | 'warn' | 'bad'): void {
  setText(ui.serverText, text);
  ui.serverState.className = `server ${tone}`;
}

function start(): void {
  buildChannelList();
  ui.connect.addEventListener('click', connect);
  for (const input of [ui.location, ui.events, ui.token]) {
    input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') connect();
    });
  }
  void pollStats().then(() => {
    if (!authOn) connect();
  });
  setInterval(() => void pollStats(), STATS_EVERY_MS);
}

start();
