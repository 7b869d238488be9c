// The WebSocket this client drives: the browser's, Node ≥ 22's global one, or the
// `ws` package's (Node 20). Only the part of the API they share is used, plus two
// `ws` extras when present: the HTTP status of a refused handshake
// (`unexpected-response`) and the server's ping frames (`ping`), which browsers hide.

/** The subset of the WebSocket API the client uses. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: never) => unknown) | null;
  onmessage: ((ev: never) => unknown) | null;
  onclose: ((ev: never) => unknown) | null;
  onerror: ((ev: never) => unknown) | null;
}

/**
 * A WebSocket constructor: `globalThis.WebSocket` in browsers and Node ≥ 22, or
 * `WebSocket` from the `ws` package. The third argument is only used with
 * `tokenTransport: 'header'`, which the `ws` package supports and browsers do not.
 */
export type WebSocketConstructor = new (
  url: string,
  protocols?: string | string[],
  options?: { headers?: Record<string, string> },
) => WebSocketLike;

/** What the client reads from the events (browser and `ws` events both have these). */
export interface CloseInfo {
  code: number;
  reason: string;
}

/** The HTTP answer to a refused handshake, when the environment lets us see it. */
export interface Refusal {
  status: number;
  /** `error` from the JSON body (docs/protocol.md §1), e.g. `token_expired`. */
  serverCode?: string;
  message?: string;
}

/** Node's `ws` socket: an EventEmitter with `terminate()`. */
interface NodeWs {
  on(event: 'unexpected-response', l: (req: unknown, res: IncomingLike) => void): unknown;
  on(event: 'ping', l: () => void): unknown;
  terminate(): void;
}

interface IncomingLike {
  statusCode?: number;
  setEncoding?(enc: string): void;
  on(event: 'data', l: (chunk: string) => void): unknown;
  on(event: 'end' | 'error' | 'close', l: () => void): unknown;
}

function asNodeWs(s: WebSocketLike): NodeWs | null {
  const x = s as unknown as Partial<NodeWs>;
  return typeof x.on === 'function' && typeof x.terminate === 'function' ? (x as NodeWs) : null;
}

const REFUSAL_BODY_LIMIT = 4096;
const REFUSAL_BODY_WAIT_MS = 2000;

/**
 * With `ws`, records the status (and the JSON body's `error`/`message`) of a
 * refused handshake before the socket closes. Taking `unexpected-response` makes
 * aborting the request our job: `terminate()` does it, and `ws` then emits
 * `error` and `close` as for any failed handshake.
 */
export function watchRefusal(s: WebSocketLike, onRefusal: (r: Refusal) => void): void {
  const nws = asNodeWs(s);
  if (!nws) return;
  nws.on('unexpected-response', (_req, res) => {
    const status = res.statusCode ?? 0;
    let body = '';
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      const r: Refusal = { status };
      try {
        const j: unknown = JSON.parse(body);
        if (typeof j === 'object' && j !== null) {
          const o = j as Record<string, unknown>;
          if (typeof o['error'] === 'string') r.serverCode = o['error'];
          if (typeof o['message'] === 'string') r.message = o['message'];
        }
      } catch {
        // Not the server's JSON (a proxy's page): the status alone says enough.
      }
      onRefusal(r);
      nws.terminate();
    };
    const timer = setTimeout(finish, REFUSAL_BODY_WAIT_MS);
    res.setEncoding?.('utf8');
    res.on('data', (chunk) => {
      if (body.length < REFUSAL_BODY_LIMIT) body += chunk;
    });
    res.on('end', finish);
    res.on('error', finish);
    res.on('close', finish);
  });
}

/** With `ws`, calls `onPing` for each server ping frame (browsers answer them unseen). */
export function watchPings(s: WebSocketLike, onPing: () => void): void {
  asNodeWs(s)?.on('ping', onPing);
}

/** Drops a socket now: `ws` can destroy it; a browser can only start a close. */
export function abandon(s: WebSocketLike, code: number, reason: string): void {
  s.onopen = s.onmessage = s.onclose = null;
  // Not null: `ws` emits `error` while aborting, and an EventEmitter with no
  // `error` listener throws.
  s.onerror = () => undefined;
  const nws = asNodeWs(s);
  try {
    if (nws) nws.terminate();
    else s.close(code, reason);
  } catch {
    // Already closed or never opened: nothing left to release.
  }
}
