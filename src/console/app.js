// Built from clients/console/src and clients/js/src by clients/js/scripts/build-console.mjs (make console). Do not edit.

// ../js/src/backoff.ts
var DEFAULT_MIN_DELAY_MS = 500;
var DEFAULT_MAX_DELAY_MS = 2e4;
function reconnectDelay(attempt, random = Math.random, opts = {}) {
  const min = opts.minMs ?? DEFAULT_MIN_DELAY_MS;
  const max = Math.max(min, opts.maxMs ?? DEFAULT_MAX_DELAY_MS);
  const n = Math.min(Math.max(1, Math.floor(attempt)), 30);
  const ceiling = Math.min(max, min * 2 ** (n + 1));
  return min + random() * (ceiling - min);
}

// ../js/src/emitter.ts
var Emitter = class {
  listeners = /* @__PURE__ */ new Map();
  /** Adds a listener; the returned function removes it. */
  on(name, listener) {
    let set = this.listeners.get(name);
    if (!set) {
      set = /* @__PURE__ */ new Set();
      this.listeners.set(name, set);
    }
    set.add(listener);
    return () => this.off(name, listener);
  }
  /** Adds a listener that is removed after its first call. */
  once(name, listener) {
    const off = this.on(name, (v) => {
      off();
      listener(v);
    });
    return off;
  }
  off(name, listener) {
    this.listeners.get(name)?.delete(listener);
  }
  listenerCount(name) {
    return this.listeners.get(name)?.size ?? 0;
  }
  emit(name, value) {
    const set = this.listeners.get(name);
    if (!set) return;
    for (const l of [...set]) {
      try {
        l(value);
      } catch (e) {
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }
};

// ../js/src/errors.ts
var BistreamError = class extends Error {
  name = "BistreamError";
  code;
  final;
  /** HTTP status of a refused handshake, when the environment shows it. */
  status;
  /** WebSocket close code, for errors that came with a close. */
  closeCode;
  /** The server's machine-readable `error` code from a refusal body (e.g. `token_expired`). */
  serverCode;
  constructor(code, message, opts) {
    super(message, opts.cause === void 0 ? void 0 : { cause: opts.cause });
    this.code = code;
    this.final = opts.final;
    this.status = opts.status;
    this.closeCode = opts.closeCode;
    this.serverCode = opts.serverCode;
  }
};
var FINAL_STATUSES = /* @__PURE__ */ new Set([400, 401, 403, 404, 405, 426]);
function refusalError(status, serverCode, message) {
  const code = status === 401 ? "unauthorized" : status === 403 ? "forbidden" : FINAL_STATUSES.has(status) ? "bad_request" : "unavailable";
  const text = `handshake refused with HTTP ${status}${serverCode ? ` (${serverCode})` : ""}${message ? `: ${message}` : ""}`;
  const opts = { final: FINAL_STATUSES.has(status), status };
  if (serverCode !== void 0) opts.serverCode = serverCode;
  return new BistreamError(code, text, opts);
}

// ../js/src/iterator.ts
function eventIterator(source, limit, onOverflow) {
  const queue = [];
  let wake = null;
  let ended = false;
  let overflowed = false;
  const stop = () => {
    ended = true;
    offEvent();
    offState();
    wake?.();
  };
  const offEvent = source.on("event", (e) => {
    queue.push(e);
    if (queue.length > limit) {
      queue.shift();
      if (!overflowed) {
        overflowed = true;
        onOverflow();
      }
    }
    wake?.();
  });
  const offState = source.on("state", (s) => {
    if (s.state === "closed") stop();
  });
  if (source.state === "closed") stop();
  const it = {
    next: async () => {
      for (; ; ) {
        const e = queue.shift();
        if (e !== void 0) return { value: e, done: false };
        if (ended) {
          if (source.error) throw source.error;
          return { value: void 0, done: true };
        }
        await new Promise((r) => {
          wake = r;
        });
        wake = null;
      }
    },
    return: async () => {
      stop();
      queue.length = 0;
      return { value: void 0, done: true };
    },
    [Symbol.asyncIterator]: () => it
  };
  return it;
}

// ../js/src/messages.ts
var CHANNELS = [
  { id: "dashboard", path: "/ws/dashboard/" },
  { id: "revenue-intelligence", path: "/ws/bi/revenue-intelligence/" },
  { id: "bot-performance", path: "/ws/bot-performance/" },
  { id: "business-intelligence", path: "/ws/business-intelligence/" },
  { id: "ai-concierge", path: "/ws/ai-concierge/" },
  { id: "analytics-advanced", path: "/ws/analytics/advanced/" }
];
var LOCATION_ID = /^[A-Za-z0-9_.:-]{1,128}$/;
var EVENT_TYPE = /^[A-Za-z0-9_.:-]{1,64}$/;
function channelPath(channel2) {
  const c = CHANNELS.find((x) => x.id === channel2);
  if (!c) throw new TypeError(`unknown channel ${JSON.stringify(channel2)}`);
  return c.path;
}
var isObj = (v) => typeof v === "object" && v !== null && !Array.isArray(v);
var isSeq = (v) => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
var str = (v) => typeof v === "string" ? v : void 0;
var seqOrNull = (v) => isSeq(v) ? v : null;
function parseServerMessage(text) {
  let m;
  try {
    m = JSON.parse(text);
  } catch {
    return { type: "ignored", why: "not JSON" };
  }
  if (!isObj(m)) return { type: "ignored", why: "not an object" };
  switch (m["type"]) {
    case "BI_CONNECTION_ESTABLISHED": {
      const epoch = str(m["epoch"]);
      const hb = m["heartbeat_interval_ms"];
      if (epoch === void 0 || !isSeq(m["last_seq"]) || !isSeq(hb) || hb === 0) {
        return { type: "ignored", why: "BI_CONNECTION_ESTABLISHED without epoch, last_seq or heartbeat_interval_ms" };
      }
      return {
        type: "established",
        value: {
          connectionId: str(m["connection_id"]) ?? "",
          channel: m["channel"],
          locationId: str(m["location_id"]) ?? "",
          epoch,
          lastSeq: m["last_seq"],
          serverTime: typeof m["server_time"] === "number" ? m["server_time"] : 0,
          heartbeatIntervalMs: hb,
          conflate: m["conflate"] === true
        }
      };
    }
    case "event": {
      const eventType = str(m["event_type"]);
      if (eventType === void 0 || !isSeq(m["seq"])) {
        return { type: "ignored", why: "event without event_type or seq" };
      }
      const ev = {
        channel: m["channel"],
        locationId: str(m["location_id"]) ?? "",
        eventType,
        seq: m["seq"],
        publishedAt: typeof m["published_at"] === "number" ? m["published_at"] : 0,
        data: m["data"] ?? null,
        snapshot: m["snapshot"] === true
      };
      const key = str(m["key"]);
      if (key !== void 0) ev.key = key;
      return { type: "event", value: ev };
    }
    case "recovered":
      if (typeof m["complete"] !== "boolean") return { type: "ignored", why: "recovered without complete" };
      return {
        type: "recovered",
        complete: m["complete"],
        fromSeq: seqOrNull(m["from_seq"]),
        toSeq: seqOrNull(m["to_seq"])
      };
    case "snapshot":
      return {
        type: "snapshot",
        value: { count: isSeq(m["count"]) ? m["count"] : 0, lastSeq: isSeq(m["last_seq"]) ? m["last_seq"] : 0 }
      };
    case "pong":
      return { type: "pong" };
    case "subscribed": {
      const list = Array.isArray(m["event_types"]) ? m["event_types"].filter((x) => typeof x === "string") : [];
      return { type: "subscribed", eventTypes: list };
    }
    case "error":
      return { type: "error", code: str(m["code"]) ?? "error", message: str(m["message"]) ?? "" };
    default:
      return { type: "ignored", why: `unknown type ${JSON.stringify(m["type"])}` };
  }
}

// ../js/src/socket.ts
function asNodeWs(s) {
  const x = s;
  return typeof x.on === "function" && typeof x.terminate === "function" ? x : null;
}
var REFUSAL_BODY_LIMIT = 4096;
var REFUSAL_BODY_WAIT_MS = 2e3;
function watchRefusal(s, onRefusal) {
  const nws = asNodeWs(s);
  if (!nws) return;
  nws.on("unexpected-response", (_req, res) => {
    const status = res.statusCode ?? 0;
    let body = "";
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      const r = { status };
      try {
        const j = JSON.parse(body);
        if (typeof j === "object" && j !== null) {
          const o = j;
          if (typeof o["error"] === "string") r.serverCode = o["error"];
          if (typeof o["message"] === "string") r.message = o["message"];
        }
      } catch {
      }
      onRefusal(r);
      nws.terminate();
    };
    const timer = setTimeout(finish, REFUSAL_BODY_WAIT_MS);
    res.setEncoding?.("utf8");
    res.on("data", (chunk) => {
      if (body.length < REFUSAL_BODY_LIMIT) body += chunk;
    });
    res.on("end", finish);
    res.on("error", finish);
    res.on("close", finish);
  });
}
function watchPings(s, onPing) {
  asNodeWs(s)?.on("ping", onPing);
}
function abandon(s, code, reason) {
  s.onopen = s.onmessage = s.onclose = null;
  s.onerror = () => void 0;
  const nws = asNodeWs(s);
  try {
    if (nws) nws.terminate();
    else s.close(code, reason);
  } catch {
  }
}

// ../js/src/subscription.ts
var DEFAULT_STABLE_AFTER_MS = 1e4;
var DEFAULT_CONNECT_TIMEOUT_MS = 1e4;
var DEFAULT_ITERATOR_BUFFER = 1e4;
var CLIENT_GIVES_UP = 4e3;
var now = () => typeof performance !== "undefined" ? performance.now() : Date.now();
function baseUrl(url) {
  let u = url;
  if (u === void 0) {
    const loc = globalThis.location;
    if (!loc) throw new TypeError("bistream-client: `url` is required outside a browser");
    u = `${loc.protocol === "https:" ? "wss:" : "ws:"}//${loc.host}`;
  }
  u = u.replace(/^http(s?):\/\//i, "ws$1://");
  if (!/^wss?:\/\//i.test(u)) throw new TypeError(`bistream-client: url must start with ws://, wss://, http:// or https:// (got ${u})`);
  return u.replace(/\/+$/, "");
}
var Subscription = class extends Emitter {
  opts;
  base;
  Ctor;
  events;
  _state = "connecting";
  /** Bumped for every connection attempt and by close(): async steps of older attempts check it and stop. */
  gen = 0;
  sock = null;
  opened = false;
  refusal = null;
  token;
  attempt = 0;
  _position;
  /** The position sent as since/epoch on the current connection. */
  resumedFrom = null;
  _established = null;
  _lastRecovered = null;
  /** True while the replay or snapshot of a new connection is still arriving. */
  catchingUp = false;
  heartbeatMs = 25e3;
  lastFrameAt = 0;
  lastPingAt = 0;
  pings = 0;
  connectTimer = null;
  stableTimer = null;
  retryTimer = null;
  watchdog = null;
  _error = null;
  constructor(opts) {
    super();
    channelPath(opts.channel);
    if (!LOCATION_ID.test(opts.location)) {
      throw new TypeError(`bistream-client: location must match [A-Za-z0-9_.:-]{1,128} (got ${JSON.stringify(opts.location)})`);
    }
    this.events = checkEvents(opts.events ?? []);
    const Ctor = opts.WebSocket ?? globalThis.WebSocket;
    if (!Ctor) {
      throw new BistreamError(
        "no_websocket",
        'bistream-client: no global WebSocket here (Node < 22): pass one, e.g. `import WebSocket from "ws"` and `{ WebSocket }`',
        { final: true }
      );
    }
    this.Ctor = Ctor;
    this.opts = opts;
    this.base = baseUrl(opts.url);
    this._position = opts.resumeFrom ? { ...opts.resumeFrom } : null;
    queueMicrotask(() => void this.connect());
  }
  get state() {
    return this._state;
  }
  /** The last `seq` this client has and its epoch: what the next reconnect resumes from. */
  get position() {
    return this._position ? { ...this._position } : null;
  }
  /** The current connection's greeting, `null` while not open. */
  get established() {
    return this._established;
  }
  /** The outcome of the latest resume, `null` before the first one. */
  get lastRecovered() {
    return this._lastRecovered;
  }
  /** The final error that closed the subscription, if one did. */
  get error() {
    return this._error;
  }
  /** The URL of the next connection, without the token (for logs). */
  get url() {
    return this.buildUrl(void 0, this._position);
  }
  /** Replaces the `events` filter, on the open connection and for every reconnect. */
  setEvents(eventTypes) {
    this.events = checkEvents(eventTypes);
    if (this.sock && this._established) this.send({ type: "subscribe", event_types: [...this.events] });
  }
  /** Resolves with the greeting when the subscription is (next) open; rejects if it closes first. */
  whenOpen() {
    if (this._state === "open" && this._established) return Promise.resolve(this._established);
    if (this._state === "closed") return Promise.reject(this._error ?? new Error("subscription closed"));
    return new Promise((resolve, reject) => {
      const off = this.on("state", (s) => {
        if (s.state === "open" && s.established) {
          off();
          resolve(s.established);
        } else if (s.state === "closed") {
          off();
          reject(s.error ?? new Error("subscription closed"));
        }
      });
    });
  }
  /** Ends the subscription: no more events, no reconnects. Safe to call twice. */
  close() {
    if (this._state === "closed") return;
    this.gen++;
    this.clearTimers();
    const s = this.sock;
    this.sock = null;
    if (s) closeQuietly(s, 1e3, "client closed");
    this._established = null;
    this.setState("closed", {});
  }
  /** `for await (const event of sub)`: events in order; ends when the subscription closes. */
  [Symbol.asyncIterator]() {
    const limit = Math.max(1, this.opts.iteratorBufferSize ?? DEFAULT_ITERATOR_BUFFER);
    return eventIterator(
      this,
      limit,
      () => this.emit("error", new BistreamError("iterator_overflow", `an async iterator fell ${limit} events behind and dropped the oldest`, { final: false }))
    );
  }
  async connect() {
    if (this._state === "closed") return;
    const gen = ++this.gen;
    this.setState("connecting", {});
    let token2;
    try {
      token2 = await this.resolveToken();
    } catch (e) {
      if (gen !== this.gen) return;
      this.emit("error", new BistreamError("token_error", `the token function failed: ${String(e)}`, { final: false, cause: e }));
      this.scheduleReconnect({ kind: "token_error" });
      return;
    }
    if (gen !== this.gen) return;
    this.token = token2;
    const resume = this._position ? { ...this._position } : null;
    const header = this.opts.tokenTransport === "header" && token2 !== void 0;
    const url = this.buildUrl(header ? void 0 : token2, resume);
    let sock;
    try {
      sock = header ? new this.Ctor(url, [], { headers: { Authorization: `Bearer ${token2}` } }) : new this.Ctor(url);
    } catch (e) {
      this.fail(new BistreamError("bad_request", `cannot open ${this.buildUrl(void 0, resume)}: ${String(e)}`, { final: true, cause: e }), {
        kind: "handshake_failed"
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
    sock.onmessage = (ev) => {
      if (this.sock === sock) this.onMessage(ev.data);
    };
    sock.onclose = (ev) => {
      if (this.sock === sock) void this.onClose(ev.code, ev.reason, token2);
    };
    sock.onerror = () => void 0;
    this.connectTimer = setTimeout(
      () => this.drop(sock, { kind: "connect_timeout" }),
      this.opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS
    );
  }
  async resolveToken() {
    const t = this.opts.token;
    if (t === void 0 || typeof t === "string") return t;
    const v = await t();
    if (typeof v !== "string" || v === "") throw new TypeError(`the token function returned ${v === "" ? "an empty string" : typeof v}`);
    return v;
  }
  buildUrl(token2, resume) {
    const q = new URLSearchParams();
    if (token2 !== void 0) q.set("token", token2);
    if (this.events.length > 0) q.set("events", this.events.join(","));
    if (resume) {
      q.set("since", String(resume.seq));
      q.set("epoch", resume.epoch);
    }
    if (this.opts.snapshot) q.set("snapshot", "1");
    if (this.opts.conflate) q.set("conflate", "1");
    const qs = q.toString().replaceAll("%2C", ",");
    return `${this.base}${channelPath(this.opts.channel)}${this.opts.location}${qs ? `?${qs}` : ""}`;
  }
  onMessage(data) {
    this.lastFrameAt = now();
    if (typeof data !== "string") return;
    const m = parseServerMessage(data);
    switch (m.type) {
      case "established":
        this.onEstablished(m.value);
        return;
      case "event": {
        const est = this._established;
        if (!est) return;
        const pos = this._position;
        const sameEpoch = pos !== null && pos.epoch === est.epoch;
        if (!m.value.snapshot && sameEpoch && m.value.seq <= pos.seq) return;
        if (!m.value.snapshot) this._position = { seq: m.value.seq, epoch: est.epoch };
        const ev = { ...m.value, epoch: est.epoch };
        if (!this.catchingUp) this.markStable();
        this.emit("event", ev);
        return;
      }
      case "recovered":
        this.onRecovered(m.complete, m.fromSeq, m.toSeq);
        return;
      case "snapshot": {
        const est = this._established;
        if (!est) return;
        const pos = this._position;
        const seq = pos && pos.epoch === est.epoch ? Math.max(pos.seq, m.value.lastSeq) : m.value.lastSeq;
        this._position = { seq, epoch: est.epoch };
        this.catchingUp = false;
        this.emit("snapshot", m.value);
        return;
      }
      case "error":
        this.emit("error", new BistreamError("server_error", `the server answered: ${m.code}: ${m.message}`, { final: false, serverCode: m.code }));
        return;
      case "pong":
      case "subscribed":
      case "ignored":
        return;
    }
  }
  onEstablished(est) {
    if (this.connectTimer) clearTimeout(this.connectTimer);
    this.connectTimer = null;
    this._established = est;
    this.heartbeatMs = est.heartbeatIntervalMs;
    if (this.resumedFrom) {
      this.catchingUp = true;
    } else {
      this._position = { seq: est.lastSeq, epoch: est.epoch };
      this.catchingUp = this.opts.snapshot === true;
    }
    const t = now();
    this.lastFrameAt = t;
    this.lastPingAt = t;
    this.startWatchdog();
    this.stableTimer = setTimeout(() => this.markStable(), this.opts.stableAfterMs ?? DEFAULT_STABLE_AFTER_MS);
    this.setState("open", { established: est });
  }
  onRecovered(complete, fromSeq, toSeq) {
    const est = this._established;
    const from = this.resumedFrom;
    if (!est || !from) return;
    const pos = this._position;
    if (complete && pos && pos.epoch === est.epoch) {
      this._position = { seq: Math.max(pos.seq, est.lastSeq), epoch: est.epoch };
    } else {
      this._position = { seq: est.lastSeq, epoch: est.epoch };
    }
    this.catchingUp = !complete && this.opts.snapshot === true;
    const r = { complete, fromSeq, toSeq, since: from.seq, epochChanged: from.epoch !== est.epoch };
    this._lastRecovered = r;
    this.emit("recovered", r);
  }
  async onClose(code, reason, token2) {
    this.sock = null;
    this._established = null;
    this.clearConnectionTimers();
    if (this._state === "closed") return;
    const gen = this.gen;
    if (this.refusal) {
      const r = this.refusal;
      const err = refusalError(r.status, r.serverCode, r.message);
      const d2 = { kind: "refused", status: r.status };
      if (err.final) this.fail(err, d2);
      else {
        this.emit("error", err);
        this.scheduleReconnect(d2);
      }
      return;
    }
    if (!this.opened) {
      const status = await this.authCheck(token2);
      if (gen !== this.gen || this.isClosed()) return;
      if (status === 401 || status === 403) {
        this.fail(refusalError(status, void 0, `the handshake failed and ${this.opts.authCheckUrl} answered ${status}`), {
          kind: "refused",
          status
        });
        return;
      }
      this.emit(
        "error",
        new BistreamError("handshake_failed", "the WebSocket handshake failed: the server is unreachable, or refused in a way this environment hides", {
          final: false,
          closeCode: code
        })
      );
      this.scheduleReconnect({ kind: "handshake_failed", code });
      return;
    }
    const d = { kind: "closed", code, reason };
    if (code === 1008 && reason !== "heartbeat timeout") {
      if (reason === "token expired" && typeof this.opts.token === "function") {
        this.emit("error", new BistreamError("policy", "the token expired; reconnecting with a new one", { final: false, closeCode: code }));
        this.scheduleReconnect(d);
        return;
      }
      this.fail(new BistreamError("policy", `closed by the server with 1008 (${reason || "policy violation"})`, { final: true, closeCode: code }), d);
      return;
    }
    if (code === 4010 && this.attempt === 0) {
      this.attempt = 1;
      this.setState("reconnecting", { delayMs: 0, disconnect: d });
      this.retryTimer = setTimeout(() => {
        this.retryTimer = null;
        void this.connect();
      }, 0);
      return;
    }
    this.scheduleReconnect(d);
  }
  async authCheck(token2) {
    const url = this.opts.authCheckUrl;
    const f = globalThis.fetch;
    if (url === void 0 || !f) return 0;
    try {
      const init = { cache: "no-store" };
      if (token2 !== void 0) init.headers = { Authorization: `Bearer ${token2}` };
      const res = await f(url, init);
      return res.status;
    } catch {
      return 0;
    }
  }
  /** Gives up on a connection the client no longer trusts (watchdog, connect timeout). */
  drop(sock, d) {
    if (this.sock !== sock) return;
    this.sock = null;
    this._established = null;
    this.clearConnectionTimers();
    abandon(sock, CLIENT_GIVES_UP, d.kind === "heartbeat" ? "heartbeat timeout" : "connect timeout");
    this.scheduleReconnect(d);
  }
  scheduleReconnect(d) {
    if (this._state === "closed") return;
    this.attempt += 1;
    const delayMs = reconnectDelay(this.attempt, this.opts.random ?? Math.random, this.opts.backoff ?? {});
    this.setState("reconnecting", { delayMs, disconnect: d });
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void this.connect();
    }, delayMs);
  }
  fail(err, d) {
    if (this._state === "closed") return;
    this._error = err;
    this.gen++;
    this.clearTimers();
    const s = this.sock;
    this.sock = null;
    if (s) closeQuietly(s, 1e3, "client gives up");
    this._established = null;
    this.emit("error", err);
    this.setState("closed", { error: err, disconnect: d });
  }
  /** A method, so that a check after an `await` is not narrowed away by the compiler. */
  isClosed() {
    return this._state === "closed";
  }
  markStable() {
    this.attempt = 0;
    if (this.stableTimer) clearTimeout(this.stableTimer);
    this.stableTimer = null;
  }
  startWatchdog() {
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
  tick(hb) {
    const sock = this.sock;
    if (!sock) return;
    const t = now();
    const idle = t - this.lastFrameAt;
    if (idle >= 2 * hb) {
      this.drop(sock, { kind: "heartbeat" });
      return;
    }
    if (idle >= hb && t - this.lastPingAt >= hb) {
      this.lastPingAt = t;
      this.send({ type: "ping", id: `w${++this.pings}` });
    }
  }
  send(msg) {
    try {
      this.sock?.send(JSON.stringify(msg));
    } catch {
    }
  }
  setState(state, extra) {
    const previous = this._state;
    if (previous === state && state !== "reconnecting") return;
    this._state = state;
    this.emit("state", { state, previous, attempt: this.attempt, ...extra });
  }
  clearConnectionTimers() {
    if (this.connectTimer) clearTimeout(this.connectTimer);
    if (this.stableTimer) clearTimeout(this.stableTimer);
    if (this.watchdog) clearInterval(this.watchdog);
    this.connectTimer = this.stableTimer = this.watchdog = null;
  }
  clearTimers() {
    this.clearConnectionTimers();
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }
};
function checkEvents(list) {
  for (const e of list) {
    if (!EVENT_TYPE.test(e)) throw new TypeError(`bistream-client: event type must match [A-Za-z0-9_.:-]{1,64} (got ${JSON.stringify(e)})`);
  }
  return [...list];
}
function closeQuietly(s, code, reason) {
  s.onopen = s.onmessage = s.onclose = null;
  s.onerror = () => void 0;
  try {
    s.close(code, reason);
  } catch {
  }
}

// src/app.ts
var MAX_ROWS = 200;
var STATS_EVERY_MS = 1e3;
var DATA_PREVIEW_CHARS = 400;
var $ = (id) => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} is missing from the page`);
  return el;
};
var ui = {
  channels: $("channel-list"),
  location: $("location"),
  events: $("events"),
  tokenField: $("token-field"),
  token: $("token"),
  connect: $("connect"),
  stream: $("st-stream"),
  state: $("st-state"),
  seq: $("st-seq"),
  epoch: $("st-epoch"),
  resume: $("st-resume"),
  count: $("st-count"),
  message: $("message"),
  rows: $("event-rows"),
  empty: $("empty"),
  serverState: $("server-state"),
  serverText: $("server-text"),
  statConnections: $("stat-connections"),
  statDeliveries: $("stat-deliveries"),
  statP99: $("stat-p99"),
  statPublished: $("stat-published")
};
var channel = "dashboard";
var sub = null;
var received = 0;
var authOn = false;
var retryTimer = null;
var token = () => ui.token.value.trim() || void 0;
function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}
function setPill(el, text, tone) {
  setText(el, text);
  el.className = `pill ${tone}`;
}
function showMessage(text) {
  ui.message.classList.toggle("hidden", text === null);
  setText(ui.message, text ?? "");
}
function buildChannelList() {
  for (const c of CHANNELS) {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.dataset["channel"] = c.id;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = c.id;
    const path = document.createElement("span");
    path.className = "path";
    path.textContent = `${c.path}{location}`;
    const n = document.createElement("span");
    n.className = "count";
    n.textContent = "–";
    b.append(name, n, path);
    b.addEventListener("click", () => {
      channel = c.id;
      markChannel();
      connect();
    });
    li.append(b);
    ui.channels.append(li);
  }
  markChannel();
}
function markChannel() {
  for (const b of ui.channels.querySelectorAll("button")) {
    const on = b.dataset["channel"] === channel;
    b.classList.toggle("active", on);
    b.setAttribute("aria-current", on ? "true" : "false");
  }
}
function disconnect() {
  sub?.close();
  sub = null;
  if (retryTimer) clearInterval(retryTimer);
  retryTimer = null;
}
function connect() {
  disconnect();
  const location = ui.location.value.trim();
  if (!/^[A-Za-z0-9_.:-]{1,128}$/.test(location)) {
    showMessage("The location must be 1–128 characters of A–Z, a–z, 0–9, _ . : -");
    return;
  }
  const events = ui.events.value.split(",").map((s2) => s2.trim()).filter((s2) => s2 !== "");
  if (authOn && !token()) {
    showMessage("This server checks tokens: paste a subscriber token first.");
    ui.token.focus();
    return;
  }
  showMessage(null);
  received = 0;
  ui.rows.replaceChildren();
  ui.empty.classList.remove("hidden");
  setText(ui.count, "0");
  setText(ui.seq, "–");
  setText(ui.epoch, "–");
  setPill(ui.resume, "none yet", "idle");
  setText(ui.stream, `${channel} / ${location}`);
  const opts = { channel, location, events, authCheckUrl: "/api/stats" };
  let s;
  try {
    s = new Subscription(token() ? { ...opts, token: () => token() ?? "" } : opts);
  } catch (e) {
    showMessage(String(e instanceof Error ? e.message : e));
    return;
  }
  sub = s;
  s.on("state", (c) => onState(s, c));
  s.on("event", (e) => onEvent(s, e));
  s.on("recovered", (r) => {
    const what = r.complete ? `complete (${r.fromSeq === null ? "nothing missed" : `replayed ${r.fromSeq}–${r.toSeq}`})` : r.epochChanged ? "incomplete: new epoch (server restarted)" : "incomplete: history too short";
    setPill(ui.resume, what, r.complete ? "ok" : "warn");
    divider(`reconnected from seq ${r.since}: resume ${what}${r.complete ? "" : " — an app would reload its state here"}`, r.complete);
    updatePosition(s);
  });
  s.on("error", (e) => {
    if (e.final) showMessage(e.message);
  });
  ui.connect.textContent = "Reconnect";
}
function onState(s, c) {
  if (s !== sub) return;
  if (retryTimer) clearInterval(retryTimer);
  retryTimer = null;
  switch (c.state) {
    case "open":
      setPill(ui.state, "open", "ok");
      showMessage(null);
      updatePosition(s);
      break;
    case "connecting":
      setPill(ui.state, c.attempt > 0 ? `connecting (attempt ${c.attempt + 1})` : "connecting", "warn");
      break;
    case "reconnecting": {
      const until = Date.now() + (c.delayMs ?? 0);
      const why = c.disconnect ? describe(c.disconnect) : "disconnected";
      const tick = () => setPill(ui.state, `${why}; retry in ${Math.max(0, (until - Date.now()) / 1e3).toFixed(1)} s`, "warn");
      tick();
      retryTimer = setInterval(tick, 100);
      break;
    }
    case "closed":
      setPill(ui.state, c.error ? "stopped" : "closed", c.error ? "bad" : "idle");
      break;
  }
}
function describe(d) {
  switch (d.kind) {
    case "heartbeat":
      return "server silent";
    case "connect_timeout":
      return "no greeting";
    case "handshake_failed":
      return "cannot connect";
    case "refused":
      return `refused (${d.status ?? "?"})`;
    case "token_error":
      return "no token";
    case "closed":
      return `closed ${d.code ?? ""}${d.reason ? ` ${d.reason}` : ""}`.trim();
  }
}
function updatePosition(s) {
  const p = s.position;
  setText(ui.seq, p ? String(p.seq) : "–");
  setText(ui.epoch, p ? p.epoch : "–");
}
function onEvent(s, e) {
  if (s !== sub) return;
  received++;
  setText(ui.count, String(received));
  updatePosition(s);
  ui.empty.classList.add("hidden");
  const tr = document.createElement("tr");
  if (e.snapshot) tr.className = "snapshot";
  const when = new Date(e.publishedAt);
  const cells = [
    `${when.toLocaleTimeString(void 0, { hour12: false })}.${String(when.getMilliseconds()).padStart(3, "0")}`,
    String(e.seq),
    e.key ? `${e.eventType} (${e.key})` : e.eventType,
    `${Math.max(0, Date.now() - e.publishedAt)} ms`,
    preview(e.data)
  ];
  const classes = ["c-time mono", "c-seq mono", "c-type", "c-lat mono", "c-data mono"];
  cells.forEach((text, i) => {
    const td = document.createElement("td");
    td.className = classes[i] ?? "";
    td.textContent = text;
    tr.append(td);
  });
  tr.title = `seq ${e.seq} · epoch ${e.epoch}${e.snapshot ? " · snapshot (last value)" : ""}`;
  ui.rows.prepend(tr);
  while (ui.rows.rows.length > MAX_ROWS) ui.rows.lastElementChild?.remove();
}
function divider(text, complete) {
  const tr = document.createElement("tr");
  tr.className = complete ? "divider" : "divider warn";
  const td = document.createElement("td");
  td.colSpan = 5;
  td.textContent = text;
  tr.append(td);
  ui.rows.prepend(tr);
  ui.empty.classList.add("hidden");
}
function preview(data) {
  let s;
  try {
    s = JSON.stringify(data) ?? "null";
  } catch {
    s = String(data);
  }
  return s.length > DATA_PREVIEW_CHARS ? `${s.slice(0, DATA_PREVIEW_CHARS)}…` : s;
}
function fmt(n, digits) {
  return n.toLocaleString(void 0, { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}
async function pollStats() {
  const headers = {};
  const t = token();
  if (t) headers["Authorization"] = `Bearer ${t}`;
  try {
    const res = await fetch("/api/stats", { headers, cache: "no-store" });
    if (res.status === 401) {
      authOn = true;
      ui.tokenField.classList.remove("hidden");
      setServer(t ? "token refused" : "token needed", "warn");
      return;
    }
    if (!res.ok) {
      setServer(`stats: HTTP ${res.status}`, "warn");
      return;
    }
    const s = await res.json();
    setServer(authOn ? "up · auth on" : "up · open (no auth)", "ok");
    setText(ui.statConnections, fmt(s.connections, 0));
    setText(ui.statDeliveries, fmt(s.deliveries_per_second, 1));
    setText(ui.statP99, s.delivery_latency_p99_ms === null ? "–" : `${fmt(s.delivery_latency_p99_ms, 2)} ms`);
    setText(ui.statPublished, fmt(s.events_published_per_second, 1));
    for (const b of ui.channels.querySelectorAll("button")) {
      const n = s.connections_by_channel[b.dataset["channel"] ?? ""];
      const el = b.querySelector(".count");
      if (el) setText(el, n === void 0 ? "–" : String(n));
    }
  } catch {
    setServer("unreachable", "bad");
  }
}
function setServer(text, tone) {
  setText(ui.serverText, text);
  ui.serverState.className = `server ${tone}`;
}
function start() {
  buildChannelList();
  ui.connect.addEventListener("click", connect);
  for (const input of [ui.location, ui.events, ui.token]) {
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter") connect();
    });
  }
  void pollStats().then(() => {
    if (!authOn) connect();
  });
  setInterval(() => void pollStats(), STATS_EVERY_MS);
}
start();
