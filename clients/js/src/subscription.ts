import { type BackoffOptions, reconnectDelay } from './backoff.js';
import { Emitter } from './emitter.js';
import { BistreamError, refusalError } from './errors.js';
import { eventIterator } from './iterator.js';
import {
  type ChannelId,
  channelPath,
  EVENT_TYPE,
  type Established,
  LOCATION_ID,
  parseServerMessage,
  type Recovered,
  type SnapshotDone,
  type StreamEvent,
} from './messages.js';
import { abandon, type Refusal, watchPings, watchRefusal, type WebSocketConstructor, type WebSocketLike } from './socket.js';

/**
 * - `connecting`: a connection is being made (token, handshake, waiting for `BI_CONNECTION_ESTABLISHED`).
 * - `open`: established; events flow.
 * - `reconnecting`: the connection ended; waiting `delayMs` before the next try.
 * - `closed`: `close()` was called, or a final error ended the subscription. Terminal.
 */
export type State = 'connecting' | 'open' | 'reconnecting' | 'closed';

/** Why a connection ended. */
export interface Disconnect {
  kind:
    | 'closed' // the server or the network closed an open connection (see code/reason)
    | 'refused' // the handshake was answered with an HTTP error the client could read (see status)
    | 'handshake_failed' // the handshake failed and the environment does not say why
    | 'heartbeat' // the watchdog saw no frame for 2 × heartbeat_interval_ms
    | 'connect_timeout' // no BI_CONNECTION_ESTABLISHED within connectTimeoutMs
    | 'token_error'; // the token function failed
  code?: number;
  reason?: string;
  status?: number;
}

export interface StateChange {
  state: State;
  previous: State;
  /** Reconnects in a row since the last stable connection (0 on the first connect). */
  attempt: number;
  /** With `reconnecting`: the delay before the next try. */
  delayMs?: number;
  /** With `reconnecting` (and `closed` after an error): why the last connection ended. */
  disconnect?: Disconnect;
  /** With `open`: the server's greeting. */
  established?: Established;
  /** With `closed` after a final error. */
  error?: BistreamError;
}

/** Where the client is in a stream: the last `seq` it has, in which `epoch`. */
export interface Position {
  seq: number;
  epoch: string;
}

/** A token, or a function that returns one; the function is called before every (re)connect. */
export type TokenSource = string | (() => string | Promise<string>);

export interface SubscriptionOptions {
  /**
   * The server: `wss://bi.example.com`, `ws://127.0.0.1:8000` (http(s):// works too,
   * and a path prefix such as `wss://example.com/bistream` when a proxy mounts it there).
   * In a browser it defaults to the page's own origin.
   */
  url?: string;
  channel: ChannelId;
  location: string;
  token?: TokenSource;
  /** Only these event types (`events=`); absent or empty = all. */
  events?: readonly string[];
  /** Ask for the last value of every key on connect (`snapshot=1`, docs/protocol.md §9). */
  snapshot?: boolean;
  /** Let the server drop superseded live events of a key (`conflate=1`, §9). */
  conflate?: boolean;
  /** Resume from a position saved earlier (e.g. across a page reload). */
  resumeFrom?: Position;
  /** A WebSocket constructor; default `globalThis.WebSocket`. Node 20: pass the `ws` package's. */
  WebSocket?: WebSocketConstructor;
  /**
   * `query` (default): `?token=`, the only way a browser can send it.
   * `header`: `Authorization: Bearer`, keeps the token out of URLs and proxy logs;
   * needs a constructor that takes headers (the `ws` package).
   */
  tokenTransport?: 'query' | 'header';
  backoff?: BackoffOptions;
  /** A connection counts as stable (the backoff starts over) after this long open, or at its first live event. Default 10000. */
  stableAfterMs?: number;
  /** Give up on a handshake that has not produced `BI_CONNECTION_ESTABLISHED` after this long. Default 10000. */
  connectTimeoutMs?: number;
  /**
   * Browsers hide the HTTP status of a refused handshake. With this set, after a
   * handshake fails without a visible status the client GETs this URL with
   * `Authorization: Bearer <token>`; a 401 or 403 there ends the subscription as
   * a final error instead of retrying forever. bistream's `GET /api/stats` (on with
   * `--console`) answers 401 for a bad token.
   */
  authCheckUrl?: string;
  /** Events an async iterator holds when the loop body is slower than the stream. Default 10000. */
  iteratorBufferSize?: number;
  /** Random numbers in [0, 1) for the backoff; default `Math.random`. */
  random?: () => number;
}

export interface SubscriptionEvents<T> {
  event: StreamEvent<T>;
  state: StateChange;
  recovered: Recovered;
  snapshot: SnapshotDone;
  error: BistreamError;
}

const DEFAULT_STABLE_AFTER_MS = 10_000;
const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
const DEFAULT_ITERATOR_BUFFER = 10_000;
/** Close code the client uses when it abandons a connection (4000–4999 is the application range). */
const CLIENT_GIVES_UP = 4000;

const now = (): number => (typeof performance !== 'undefined' ? performance.now() : Date.now());

function baseUrl(url: string | undefined): string {
  let u = url;
  if (u === undefined) {
    const loc = (globalThis as { location?: { protocol: string; host: string } }).location;
    if (!loc) throw new TypeError('bistream-client: `url` is required outside a browser');
    u = `${loc.protocol === 'https:' ? 'wss:' : 'ws:'}//${loc.host}`;
  }
  u = u.replace(/^http(s?):\/\//i, 'ws$1://');
  if (!/^wss?:\/\//i.test(u)) throw new TypeError(`bistream-client: url must start with ws://, wss://, http:// or https:// (got ${u})`);
  return u.replace(/\/+$/, '');
}

/**
 * One subscription to one stream (a channel and a location). It connects at once,
 * reconnects by itself, and ends only with `close()` or a final error.
 *
 * ```ts
 * const sub = new Subscription<Revenue>({ url, channel: 'dashboard', location: 'loc-1', token: getToken });
 * sub.on('event', (e) => render(e.data));
 * sub.on('recovered', (r) => { if (!r.complete) reload(); });
 * ```
 */
export class Subscription<T = unknown> extends Emitter<SubscriptionEvents<T>> implements AsyncIterable<StreamEvent<T>> {
  private readonly opts: SubscriptionOptions;
  private readonly base: string;
  private readonly Ctor: WebSocketConstructor;
  private events: readonly string[];
  private _state: State = 'connecting';
  /** Bumped for every connection attempt and by close(): async steps of older attempts check it and stop. */
  private gen = 0;
  private sock: WebSocketLike | null = null;
  private opened = false;
  private refusal: Refusal | null = null;
  private token: string | undefined;
  private attempt = 0;
  private _position: Position | null;
  /** The position sent as since/epoch on the current connection. */
  private resumedFrom: Position | null = null;
  private _established: Established | null = null;
  private _lastRecovered: Recovered | null = null;
  /** True while the replay or snapshot of a new connection is still arriving. */
  private catchingUp = false;
  private heartbeatMs = 25_000;
  private lastFrameAt = 0;
  private lastPingAt = 0;
  private pings = 0;
  private connectTimer: ReturnType<typeof setTimeout> | null = null;
  private stableTimer: ReturnType<typeof setTimeout> | null = null;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private watchdog: ReturnType<typeof setInterval> | null = null;
  private _error: BistreamError | null = null;

  constructor(opts: SubscriptionOptions) {
    super();
    channelPath(opts.channel);
    if (!LOCATION_ID.test(opts.location)) {
      throw new TypeError(`bistream-client: location must match [A-Za-z0-9_.:-]{1,128} (got ${JSON.stringify(opts.location)})`);
    }
    this.events = checkEvents(opts.events ?? []);
    const Ctor = opts.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!Ctor) {
      throw new BistreamError(
        'no_websocket',
        'bistream-client: no global WebSocket here (Node < 22): pass one, e.g. `import WebSocket from "ws"` and `{ WebSocket }`',
        { final: true },
      );
    }
    this.Ctor = Ctor;
    this.opts = opts;
    this.base = baseUrl(opts.url);
    this._position = opts.resumeFrom ? { ...opts.resumeFrom } : null;
    // Start after the caller's synchronous `on(...)` calls.
    queueMicrotask(() => void this.connect());
  }

  get state(): State {
    return this._state;
  }

  /** The last `seq` this client has and its epoch: what the next reconnect resumes from. */
  get position(): Position | null {
    return this._position ? { ...this._position } : null;
  }

  /** The current connection's greeting, `null` while not open. */
  get established(): Established | null {
    return this._established;
  }

  /** The outcome of the latest resume, `null` before the first one. */
  get lastRecovered(): Recovered | null {
    return this._lastRecovered;
  }

  /** The final error that closed the subscription, if one did. */
  get error(): BistreamError | null {
    return this._error;
  }

  /** The URL of the next connection, without the token (for logs). */
  get url(): string {
    return this.buildUrl(undefined, this._position);
  }

  /** Replaces the `events` filter, on the open connection and for every reconnect. */
  setEvents(eventTypes: readonly string[]): void {
    this.events = checkEvents(eventTypes);
    if (this.sock && this._established) this.send({ type: 'subscribe', event_types: [...this.events] });
  }

  /** Resolves with the greeting when the subscription is (next) open; rejects if it closes first. */
  whenOpen(): Promise<Established> {
    if (this._state === 'open' && this._established) return Promise.resolve(this._established);
    if (this._state === 'closed') return Promise.reject(this._error ?? new Error('subscription closed'));
    return new Promise((resolve, reject) => {
      const off = this.on('state', (s) => {
        if (s.state === 'open' && s.established) {
          off();
          resolve(s.established);
        } else if (s.state === 'closed') {
          off();
          reject(s.error ?? new Error('subscription closed'));
        }
      });
    });
  }

  /** Ends the subscription: no more events, no reconnects. Safe to call twice. */
  close(): void {
    if (this._state === 'closed') return;
    this.gen++;
    this.clearTimers();
    const s = this.sock;
    this.sock = null;
    if (s) closeQuietly(s, 1000, 'client closed');
    this._established = null;
    this.setState('closed', {});
  }

  /** `for await (const event of sub)`: events in order; ends when the subscription closes. */
  [Symbol.asyncIterator](): AsyncIterator<StreamEvent<T>> {
    const limit = Math.max(1, this.opts.iteratorBufferSize ?? DEFAULT_ITERATOR_BUFFER);
    return eventIterator<T>(this, limit, () =>
      this.emit('error', new BistreamError('iterator_overflow', `an async iterator fell ${limit} events behind and dropped the oldest`, { final: false })),
    );
  }

  private async connect(): Promise<void> {
    if (this._state === 'closed') return;
    const gen = ++this.gen;
    this.setState('connecting', {});
    let token: string | undefined;
    try {
      token = await this.resolveToken();
    } catch (e) {
      if (gen !== this.gen) return;
      this.emit('error', new BistreamError('token_error', `the token function failed: ${String(e)}`, { final: false, cause: e }));
      this.scheduleReconnect({ kind: 'token_error' });
      return;
    }
    if (gen !== this.gen) return;
    this.token = token;
    const resume = this._position ? { ...this._position } : null;
    const header = this.opts.tokenTransport === 'header' && token !== undefined;
    const url = this.buildUrl(header ? undefined : token, resume);
    let sock: WebSocketLike;
    try {
      sock = header ? new this.Ctor(url, [], { headers: { Authorization: `Bearer ${token}` } }) : new this.Ctor(url);
    } catch (e) {
      this.fail(new BistreamError('bad_request', `cannot open ${this.buildUrl(undefined, resume)}: ${String(e)}`, { final: true, cause: e }), {
        kind: 'handshake_failed',
      });
      return;
    }
    this.sock = sock;
    this.opened = false;
    this.refusal = null;
    this.resumedFrom = resume;
    this._established = null;
    this.catchingUp = false;
    watchRefusal(sock, (r) => {
      if (this.sock === sock) this.refusal = r;
    });
    watchPings(sock, () => {
      if (this.sock === sock) this.lastFrameAt = now();
    });
    sock.onopen = () => {
      if (this.sock !== sock) return;
      this.opened = true;
      this.lastFrameAt = now();
    };
    sock.onmessage = (ev: { data: unknown }) => {
      if (this.sock === sock) this.onMessage(ev.data);
    };
    sock.onclose = (ev: { code: number; reason: string }) => {
      if (this.sock === sock) void this.onClose(ev.code, ev.reason, token);
    };
    // The close event that follows says what there is to say.
    sock.onerror = () => undefined;
    this.connectTimer = setTimeout(
      () => this.drop(sock, { kind: 'connect_timeout' }),
      this.opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
    );
  }

  private async resolveToken(): Promise<string | undefined> {
    const t = this.opts.token;
    if (t === undefined || typeof t === 'string') return t;
    const v = await t();
    if (typeof v !== 'string' || v === '') throw new TypeError(`the token function returned ${v === '' ? 'an empty string' : typeof v}`);
    return v;
  }

  private buildUrl(token: string | undefined, resume: Position | null): string {
    const q = new URLSearchParams();
    if (token !== undefined) q.set('token', token);
    if (this.events.length > 0) q.set('events', this.events.join(','));
    if (resume) {
      q.set('since', String(resume.seq));
      q.set('epoch', resume.epoch);
    }
    if (this.opts.snapshot) q.set('snapshot', '1');
    if (this.opts.conflate) q.set('conflate', '1');
    const qs = q.toString().replaceAll('%2C', ',');
    return `${this.base}${channelPath(this.opts.channel)}${this.opts.location}${qs ? `?${qs}` : ''}`;
  }

  private onMessage(data: unknown): void {
    this.lastFrameAt = now();
    // Binary frames are not part of the contract.
    if (typeof data !== 'string') return;
    const m = parseServerMessage(data);
    switch (m.type) {
      case 'established':
        this.onEstablished(m.value);
        return;
      case 'event': {
        const est = this._established;
        if (!est) return;
        const pos = this._position;
        const sameEpoch = pos !== null && pos.epoch === est.epoch;
        // The server never repeats an event; this guards the app if anything in between does.
        if (!m.value.snapshot && sameEpoch && m.value.seq <= pos.seq) return;
        if (!m.value.snapshot) this._position = { seq: m.value.seq, epoch: est.epoch };
        const ev = { ...m.value, epoch: est.epoch } as StreamEvent<T>;
        if (!this.catchingUp) this.markStable();
        this.emit('event', ev);
        return;
      }
      case 'recovered':
        this.onRecovered(m.complete, m.fromSeq, m.toSeq);
        return;
      case 'snapshot': {
        const est = this._established;
        if (!est) return;
        const pos = this._position;
        const seq = pos && pos.epoch === est.epoch ? Math.max(pos.seq, m.value.lastSeq) : m.value.lastSeq;
        this._position = { seq, epoch: est.epoch };
        this.catchingUp = false;
        this.emit('snapshot', m.value);
        return;
      }
      case 'error':
        this.emit('error', new BistreamError('server_error', `the server answered: ${m.code}: ${m.message}`, { final: false, serverCode: m.code }));
        return;
      case 'pong':
      case 'subscribed':
      case 'ignored':
        return;
    }
  }

  private onEstablished(est: Established): void {
    if (this.connectTimer) clearTimeout(this.connectTimer);
    this.connectTimer = null;
    this._established = est;
    this.heartbeatMs = est.heartbeatIntervalMs;
    if (this.resumedFrom) {
      // The replay, then `recovered` (and, when incomplete, the snapshot) follow.
      this.catchingUp = true;
    } else {
      // Events up to last_seq happened before this client: a reconnect resumes after them.
      this._position = { seq: est.lastSeq, epoch: est.epoch };
      this.catchingUp = this.opts.snapshot === true;
    }
    const t = now();
    this.lastFrameAt = t;
    this.lastPingAt = t;
    this.startWatchdog();
    this.stableTimer = setTimeout(() => this.markStable(), this.opts.stableAfterMs ?? DEFAULT_STABLE_AFTER_MS);
    this.setState('open', { established: est });
  }

  private onRecovered(complete: boolean, fromSeq: number | null, toSeq: number | null): void {
    const est = this._established;
    const from = this.resumedFrom;
    if (!est || !from) return;
    const pos = this._position;
    if (complete && pos && pos.epoch === est.epoch) {
      // Everything after `since` that passes the filter was replayed; the rest up to last_seq did not pass it.
      this._position = { seq: Math.max(pos.seq, est.lastSeq), epoch: est.epoch };
    } else {
      this._position = { seq: est.lastSeq, epoch: est.epoch };
    }
    this.catchingUp = !complete && this.opts.snapshot === true;
    const r: Recovered = { complete, fromSeq, toSeq, since: from.seq, epochChanged: from.epoch !== est.epoch };
    this._lastRecovered = r;
    this.emit('recovered', r);
  }

  private async onClose(code: number, reason: string, token: string | undefined): Promise<void> {
    this.sock = null;
    this._established = null;
    this.clearConnectionTimers();
    if (this._state === 'closed') return;
    const gen = this.gen;
    if (this.refusal) {
      const r = this.refusal;
      const err = refusalError(r.status, r.serverCode, r.message);
      const d: Disconnect = { kind: 'refused', status: r.status };
      if (err.final) this.fail(err, d);
      else {
        this.emit('error', err);
        this.scheduleReconnect(d);
      }
      return;
    }
    if (!this.opened) {
      const status = await this.authCheck(token);
      if (gen !== this.gen || this.isClosed()) return;
      if (status === 401 || status === 403) {
        this.fail(refusalError(status, undefined, `the handshake failed and ${this.opts.authCheckUrl} answered ${status}`), {
          kind: 'refused',
          status,
        });
        return;
      }
      this.emit(
        'error',
        new BistreamError('handshake_failed', 'the WebSocket handshake failed: the server is unreachable, or refused in a way this environment hides', {
          final: false,
          closeCode: code,
        }),
      );
      this.scheduleReconnect({ kind: 'handshake_failed', code });
      return;
    }
    const d: Disconnect = { kind: 'closed', code, reason };
    if (code === 1008 && reason !== 'heartbeat timeout') {
      // A fresh token from the function fixes an expiry; anything else under 1008 is final.
      if (reason === 'token expired' && typeof this.opts.token === 'function') {
        this.emit('error', new BistreamError('policy', 'the token expired; reconnecting with a new one', { final: false, closeCode: code }));
        this.scheduleReconnect(d);
        return;
      }
      this.fail(new BistreamError('policy', `closed by the server with 1008 (${reason || 'policy violation'})`, { final: true, closeCode: code }), d);
      return;
    }
    if (code === 4010 && this.attempt === 0) {
      // Resync (§10): the server asks for a reconnect with since/epoch now. Only the
      // first in a row is immediate, so a server that repeats it cannot make a loop.
      this.attempt = 1;
      this.setState('reconnecting', { delayMs: 0, disconnect: d });
      this.retryTimer = setTimeout(() => {
        this.retryTimer = null;
        void this.connect();
      }, 0);
      return;
    }
    this.scheduleReconnect(d);
  }

  private async authCheck(token: string | undefined): Promise<number> {
    const url = this.opts.authCheckUrl;
    const f = (globalThis as { fetch?: typeof fetch }).fetch;
    if (url === undefined || !f) return 0;
    try {
      const init: RequestInit = { cache: 'no-store' };
      if (token !== undefined) init.headers = { Authorization: `Bearer ${token}` };
      const res = await f(url, init);
      return res.status;
    } catch {
      return 0;
    }
  }

  /** Gives up on a connection the client no longer trusts (watchdog, connect timeout). */
  private drop(sock: WebSocketLike, d: Disconnect): void {
    if (this.sock !== sock) return;
    this.sock = null;
    this._established = null;
    this.clearConnectionTimers();
    abandon(sock, CLIENT_GIVES_UP, d.kind === 'heartbeat' ? 'heartbeat timeout' : 'connect timeout');
    this.scheduleReconnect(d);
  }

  private scheduleReconnect(d: Disconnect): void {
    if (this._state === 'closed') return;
    this.attempt += 1;
    const delayMs = reconnectDelay(this.attempt, this.opts.random ?? Math.random, this.opts.backoff ?? {});
    this.setState('reconnecting', { delayMs, disconnect: d });
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void this.connect();
    }, delayMs);
  }

  private fail(err: BistreamError, d: Disconnect): void {
    if (this._state === 'closed') return;
    this._error = err;
    this.gen++;
    this.clearTimers();
    const s = this.sock;
    this.sock = null;
    if (s) closeQuietly(s, 1000, 'client gives up');
    this._established = null;
    this.emit('error', err);
    this.setState('closed', { error: err, disconnect: d });
  }

  /** A method, so that a check after an `await` is not narrowed away by the compiler. */
  private isClosed(): boolean {
    return this._state === 'closed';
  }

  private markStable(): void {
    this.attempt = 0;
    if (this.stableTimer) clearTimeout(this.stableTimer);
    this.stableTimer = null;
  }

  private startWatchdog(): void {
    if (this.watchdog) clearInterval(this.watchdog);
    const hb = this.heartbeatMs;
    this.watchdog = setInterval(() => this.tick(hb), Math.max(20, Math.floor(hb / 4)));
  }

  /**
   * Browsers never show the server's ping frames, so silence is measured on messages
   * only, and the client makes its own traffic: after one interval without a frame
   * it sends `{"type":"ping"}`, which a live server answers with `pong`. Two intervals
   * without any frame: the server (or the path to it) is gone, even if TCP says nothing.
   */
  private tick(hb: number): void {
    const sock = this.sock;
    if (!sock) return;
    const t = now();
    const idle = t - this.lastFrameAt;
    if (idle >= 2 * hb) {
      this.drop(sock, { kind: 'heartbeat' });
      return;
    }
    if (idle >= hb && t - this.lastPingAt >= hb) {
      this.lastPingAt = t;
      this.send({ type: 'ping', id: `w${++this.pings}` });
    }
  }

  private send(msg: object): void {
    try {
      this.sock?.send(JSON.stringify(msg));
    } catch {
      // A socket that is closing: its close event follows.
    }
  }

  private setState(state: State, extra: Omit<StateChange, 'state' | 'previous' | 'attempt'>): void {
    const previous = this._state;
    if (previous === state && state !== 'reconnecting') return;
    this._state = state;
    this.emit('state', { state, previous, attempt: this.attempt, ...extra });
  }

  private clearConnectionTimers(): void {
    if (this.connectTimer) clearTimeout(this.connectTimer);
    if (this.stableTimer) clearTimeout(this.stableTimer);
    if (this.watchdog) clearInterval(this.watchdog);
    this.connectTimer = this.stableTimer = this.watchdog = null;
  }

  private clearTimers(): void {
    this.clearConnectionTimers();
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }
}

function checkEvents(list: readonly string[]): readonly string[] {
  for (const e of list) {
    if (!EVENT_TYPE.test(e)) throw new TypeError(`bistream-client: event type must match [A-Za-z0-9_.:-]{1,64} (got ${JSON.stringify(e)})`);
  }
  return [...list];
}

function closeQuietly(s: WebSocketLike, code: number, reason: string): void {
  s.onopen = s.onmessage = s.onclose = null;
  s.onerror = () => undefined;
  try {
    s.close(code, reason);
  } catch {
    // Already closed.
  }
}

/** `new Subscription(opts)`, for those who prefer a function. */
export function subscribe<T = unknown>(opts: SubscriptionOptions): Subscription<T> {
  return new Subscription<T>(opts);
}
