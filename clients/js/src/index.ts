/**
 * bistream-client: subscribe to a bistream stream from a browser, Next.js or Node ≥ 20.
 *
 * One {@link Subscription} per stream (channel + location). It reconnects with
 * full-jitter backoff, resumes with `since`/`epoch` and says whether the resume was
 * complete, watches heartbeats, and refreshes its token before every reconnect.
 */
export { Subscription, subscribe } from './subscription.js';
export type {
  Disconnect,
  Position,
  State,
  StateChange,
  SubscriptionEvents,
  SubscriptionOptions,
  TokenSource,
} from './subscription.js';
export { CHANNELS, channelPath } from './messages.js';
export type { ChannelId, Established, Recovered, SnapshotDone, StreamEvent } from './messages.js';
export { BistreamError, FINAL_STATUSES } from './errors.js';
export type { ErrorCode } from './errors.js';
export { reconnectDelay, DEFAULT_MAX_DELAY_MS, DEFAULT_MIN_DELAY_MS } from './backoff.js';
export type { BackoffOptions } from './backoff.js';
export type { WebSocketConstructor, WebSocketLike } from './socket.js';
