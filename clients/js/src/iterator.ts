import type { BistreamError } from './errors.js';
import type { StreamEvent } from './messages.js';

/** What the iterator needs from a subscription. */
export interface IterableSource<T> {
  on(name: 'event', listener: (e: StreamEvent<T>) => void): () => void;
  on(name: 'state', listener: (s: { state: string }) => void): () => void;
  readonly state: string;
  readonly error: BistreamError | null;
}

/**
 * Events from `source` as an async iterator: in order, buffered up to `limit`
 * while the loop body is busy (past it the oldest are dropped and `onOverflow`
 * is called once). Ends when the subscription closes; after a final error, the
 * buffered events come first, then `next()` throws the error.
 */
export function eventIterator<T>(source: IterableSource<T>, limit: number, onOverflow: () => void): AsyncIterator<StreamEvent<T>> & AsyncIterable<StreamEvent<T>> {
  const queue: StreamEvent<T>[] = [];
  let wake: (() => void) | null = null;
  let ended = false;
  let overflowed = false;
  const stop = (): void => {
    ended = true;
    offEvent();
    offState();
    wake?.();
  };
  const offEvent = source.on('event', (e) => {
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
  const offState = source.on('state', (s) => {
    if (s.state === 'closed') stop();
  });
  if (source.state === 'closed') stop();
  const it: AsyncIterator<StreamEvent<T>> & AsyncIterable<StreamEvent<T>> = {
    next: async (): Promise<IteratorResult<StreamEvent<T>>> => {
      for (;;) {
        const e = queue.shift();
        if (e !== undefined) return { value: e, done: false };
        if (ended) {
          if (source.error) throw source.error;
          return { value: undefined, done: true };
        }
        await new Promise<void>((r) => {
          wake = r;
        });
        wake = null;
      }
    },
    return: async (): Promise<IteratorResult<StreamEvent<T>>> => {
      stop();
      queue.length = 0;
      return { value: undefined, done: true };
    },
    [Symbol.asyncIterator]: () => it,
  };
  return it;
}
