/** Reconnect timing. All durations in milliseconds. */
export interface BackoffOptions {
  /** Shortest delay before a reconnect. Default 500. */
  minMs?: number;
  /** Longest delay before a reconnect. Default 20000. */
  maxMs?: number;
}

export const DEFAULT_MIN_DELAY_MS = 500;
export const DEFAULT_MAX_DELAY_MS = 20_000;

/**
 * Full-jitter backoff: the delay before the `attempt`-th reconnect in a row
 * (1, 2, 3, …) is uniformly random in [min, min(max, min × 2^(attempt+1))]:
 * 0.5–2 s, 0.5–4 s, 0.5–8 s, 0.5–16 s, then 0.5–20 s.
 *
 * The exponent starts one step up on purpose: when a server restarts, every
 * client loses its connection in the same millisecond, and a first window of
 * 0.5–1 s would bring them all back within half a second. 0.5–2 s spreads them
 * over 1.5 s. The random part covers the whole window ("full jitter"), so
 * clients that failed together do not stay in step on later attempts either.
 */
export function reconnectDelay(attempt: number, random: () => number = Math.random, opts: BackoffOptions = {}): number {
  const min = opts.minMs ?? DEFAULT_MIN_DELAY_MS;
  const max = Math.max(min, opts.maxMs ?? DEFAULT_MAX_DELAY_MS);
  const n = Math.min(Math.max(1, Math.floor(attempt)), 30);
  const ceiling = Math.min(max, min * 2 ** (n + 1));
  return min + random() * (ceiling - min);
}
