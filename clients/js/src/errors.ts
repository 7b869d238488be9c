/**
 * What went wrong, and whether the subscription gave up because of it.
 *
 * `final: true` errors end the subscription (state `closed`): retrying cannot
 * help (a refused token, a grant that does not cover the stream, a bad
 * location). `final: false` errors are reported so the app can log them; the
 * subscription retries by itself.
 */
export type ErrorCode =
  /** HTTP 401 on the handshake: the token is missing, invalid or expired. */
  | 'unauthorized'
  /** HTTP 403: the token does not grant this channel or location, or the Origin is not allowed. */
  | 'forbidden'
  /** HTTP 400/404/405/426 on the handshake: the URL or the options are wrong. */
  | 'bad_request'
  /** Close 1008 other than `heartbeat timeout` (e.g. `token expired` with a fixed token, abuse). */
  | 'policy'
  /** The handshake failed and the environment does not say why (a browser: server down, or refused). */
  | 'handshake_failed'
  /** HTTP 503 or another status a retry may fix. */
  | 'unavailable'
  /** The `token` function threw or returned something that is not a string. */
  | 'token_error'
  /** The server answered a client message with `{"type":"error"}`. */
  | 'server_error'
  /** An async iterator fell behind and dropped its oldest events. */
  | 'iterator_overflow'
  /** No WebSocket implementation: pass `WebSocket` in the options (Node < 22). */
  | 'no_websocket';

export class BistreamError extends Error {
  override readonly name = 'BistreamError';
  readonly code: ErrorCode;
  readonly final: boolean;
  /** HTTP status of a refused handshake, when the environment shows it. */
  readonly status: number | undefined;
  /** WebSocket close code, for errors that came with a close. */
  readonly closeCode: number | undefined;
  /** The server's machine-readable `error` code from a refusal body (e.g. `token_expired`). */
  readonly serverCode: string | undefined;

  constructor(
    code: ErrorCode,
    message: string,
    opts: { final: boolean; status?: number; closeCode?: number; serverCode?: string; cause?: unknown },
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.code = code;
    this.final = opts.final;
    this.status = opts.status;
    this.closeCode = opts.closeCode;
    this.serverCode = opts.serverCode;
  }
}

/** Handshake statuses after which a retry cannot succeed (docs/protocol.md §1). */
export const FINAL_STATUSES: ReadonlySet<number> = new Set([400, 401, 403, 404, 405, 426]);

export function refusalError(status: number, serverCode: string | undefined, message: string | undefined): BistreamError {
  const code: ErrorCode =
    status === 401 ? 'unauthorized' : status === 403 ? 'forbidden' : FINAL_STATUSES.has(status) ? 'bad_request' : 'unavailable';
  const text = `handshake refused with HTTP ${status}${serverCode ? ` (${serverCode})` : ''}${message ? `: ${message}` : ''}`;
  const opts: { final: boolean; status: number; serverCode?: string } = { final: FINAL_STATUSES.has(status), status };
  if (serverCode !== undefined) opts.serverCode = serverCode;
  return new BistreamError(code, text, opts);
}
