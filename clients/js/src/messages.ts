// The wire messages of docs/protocol.md §2, §3 and §9, and their parsing.
// The server is trusted to send well-formed JSON, but not trusted to be the
// version this client was written against: unknown types and fields are ignored,
// a message missing a field this client relies on is dropped.

/** The six channels of docs/protocol.md §1, in the order the contract lists them. */
export const CHANNELS = [
  { id: 'dashboard', path: '/ws/dashboard/' },
  { id: 'revenue-intelligence', path: '/ws/bi/revenue-intelligence/' },
  { id: 'bot-performance', path: '/ws/bot-performance/' },
  { id: 'business-intelligence', path: '/ws/business-intelligence/' },
  { id: 'ai-concierge', path: '/ws/ai-concierge/' },
  { id: 'analytics-advanced', path: '/ws/analytics/advanced/' },
] as const;

export type ChannelId = (typeof CHANNELS)[number]['id'];

/** `location_id` and `event_type` syntax (docs/protocol.md §1, §5). */
export const LOCATION_ID = /^[A-Za-z0-9_.:-]{1,128}$/;
export const EVENT_TYPE = /^[A-Za-z0-9_.:-]{1,64}$/;

export function channelPath(channel: ChannelId): string {
  const c = CHANNELS.find((x) => x.id === channel);
  if (!c) throw new TypeError(`unknown channel ${JSON.stringify(channel)}`);
  return c.path;
}

/** `BI_CONNECTION_ESTABLISHED`: the first message of every connection. */
export interface Established {
  connectionId: string;
  channel: ChannelId;
  locationId: string;
  /** Names the stream's history; a new epoch means the history was lost. */
  epoch: string;
  /** The stream's newest `seq` when the connection was made. */
  lastSeq: number;
  serverTime: number;
  heartbeatIntervalMs: number;
  /** True when the server conflates this connection's live events (§9). */
  conflate: boolean;
}

/** One event of the stream, generic over its `data`. */
export interface StreamEvent<T = unknown> {
  channel: ChannelId;
  locationId: string;
  eventType: string;
  /** Counts the stream's events from 1 without gaps (gaps only with `events` or `conflate`). */
  seq: number;
  /** Server time (ms since the Unix epoch) when the event was accepted. */
  publishedAt: number;
  data: T;
  /** Present when the event was published with a `key` (§9). */
  key?: string;
  /** True for the last values sent on connect with `snapshot: true` (§9). */
  snapshot: boolean;
  /** The epoch the `seq` belongs to. */
  epoch: string;
}

/** The outcome of a resume (§3): `complete: false` means reload your state. */
export interface Recovered {
  complete: boolean;
  /** First and last `seq` replayed, `null` when nothing was. */
  fromSeq: number | null;
  toSeq: number | null;
  /** The position the client resumed from. */
  since: number;
  /** True when the server's epoch differed from the one resumed from (its history was lost). */
  epochChanged: boolean;
}

/** The end of the snapshot of last values (§9). */
export interface SnapshotDone {
  count: number;
  lastSeq: number;
}

/** A message from the server, parsed. `ignored` covers unknown types (forward compatibility). */
export type ServerMessage =
  | { type: 'established'; value: Established }
  | { type: 'event'; value: Omit<StreamEvent<unknown>, 'epoch'> }
  | { type: 'recovered'; complete: boolean; fromSeq: number | null; toSeq: number | null }
  | { type: 'snapshot'; value: SnapshotDone }
  | { type: 'pong' }
  | { type: 'subscribed'; eventTypes: string[] }
  | { type: 'error'; code: string; message: string }
  | { type: 'ignored'; why: string };

type Json = Record<string, unknown>;

const isObj = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
const isSeq = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
const seqOrNull = (v: unknown): number | null => (isSeq(v) ? v : null);

export function parseServerMessage(text: string): ServerMessage {
  let m: unknown;
  try {
    m = JSON.parse(text);
  } catch {
    return { type: 'ignored', why: 'not JSON' };
  }
  if (!isObj(m)) return { type: 'ignored', why: 'not an object' };
  switch (m['type']) {
    case 'BI_CONNECTION_ESTABLISHED': {
      const epoch = str(m['epoch']);
      const hb = m['heartbeat_interval_ms'];
      if (epoch === undefined || !isSeq(m['last_seq']) || !isSeq(hb) || hb === 0) {
        return { type: 'ignored', why: 'BI_CONNECTION_ESTABLISHED without epoch, last_seq or heartbeat_interval_ms' };
      }
      return {
        type: 'established',
        value: {
          connectionId: str(m['connection_id']) ?? '',
          channel: m['channel'] as ChannelId,
          locationId: str(m['location_id']) ?? '',
          epoch,
          lastSeq: m['last_seq'],
          serverTime: typeof m['server_time'] === 'number' ? m['server_time'] : 0,
          heartbeatIntervalMs: hb,
          conflate: m['conflate'] === true,
        },
      };
    }
    case 'event': {
      const eventType = str(m['event_type']);
      if (eventType === undefined || !isSeq(m['seq'])) {
        return { type: 'ignored', why: 'event without event_type or seq' };
      }
      const ev: Omit<StreamEvent<unknown>, 'epoch'> = {
        channel: m['channel'] as ChannelId,
        locationId: str(m['location_id']) ?? '',
        eventType,
        seq: m['seq'],
        publishedAt: typeof m['published_at'] === 'number' ? m['published_at'] : 0,
        data: m['data'] ?? null,
        snapshot: m['snapshot'] === true,
      };
      const key = str(m['key']);
      if (key !== undefined) ev.key = key;
      return { type: 'event', value: ev };
    }
    case 'recovered':
      if (typeof m['complete'] !== 'boolean') return { type: 'ignored', why: 'recovered without complete' };
      return {
        type: 'recovered',
        complete: m['complete'],
        fromSeq: seqOrNull(m['from_seq']),
        toSeq: seqOrNull(m['to_seq']),
      };
    case 'snapshot':
      return {
        type: 'snapshot',
        value: { count: isSeq(m['count']) ? m['count'] : 0, lastSeq: isSeq(m['last_seq']) ? m['last_seq'] : 0 },
      };
    case 'pong':
      return { type: 'pong' };
    case 'subscribed': {
      const list = Array.isArray(m['event_types']) ? m['event_types'].filter((x): x is string => typeof x === 'string') : [];
      return { type: 'subscribed', eventTypes: list };
    }
    case 'error':
      return { type: 'error', code: str(m['code']) ?? 'error', message: str(m['message']) ?? '' };
    default:
      return { type: 'ignored', why: `unknown type ${JSON.stringify(m['type'])}` };
  }
}
