'use client';

import { useEffect, useRef, useState } from 'react';
import { type BistreamError, type ChannelId, type Recovered, type State, type StreamEvent, Subscription } from 'bistream-client';

export interface UseBistreamOptions {
  /** wss://bi.example.com; default: the page's own origin. */
  url?: string;
  /** A token, or a function that fetches a fresh one (called before every reconnect). */
  token?: string | (() => Promise<string>);
  events?: string[];
  snapshot?: boolean;
  conflate?: boolean;
  /** Events kept in state, newest first. */
  keep?: number;
}

export interface BistreamView<T> {
  events: StreamEvent<T>[];
  state: State;
  /** The last resume; `complete: false` means: reload your data from the REST API. */
  recovered: Recovered | null;
  error: BistreamError | null;
}

/** Subscribes while the component is mounted; one connection per (channel, location, filter). */
export function useBistream<T>(channel: ChannelId, location: string, opts: UseBistreamOptions = {}): BistreamView<T> {
  const [view, setView] = useState<BistreamView<T>>({ events: [], state: 'connecting', recovered: null, error: null });
  // The latest token source, read at each (re)connect without tearing the connection down.
  const token = useRef(opts.token);
  token.current = opts.token;
  const keep = opts.keep ?? 100;
  const events = (opts.events ?? []).join(',');

  useEffect(() => {
    const sub = new Subscription<T>({
      ...(opts.url ? { url: opts.url } : {}),
      channel,
      location,
      events: events ? events.split(',') : [],
      snapshot: opts.snapshot ?? false,
      conflate: opts.conflate ?? false,
      ...(token.current === undefined
        ? {}
        : { token: async () => (typeof token.current === 'function' ? token.current() : (token.current ?? '')) }),
    });
    const offs = [
      sub.on('event', (e) => setView((v) => ({ ...v, events: [e, ...v.events].slice(0, keep) }))),
      sub.on('state', (s) => setView((v) => ({ ...v, state: s.state, error: s.error ?? v.error }))),
      sub.on('recovered', (r) => setView((v) => ({ ...v, recovered: r }))),
    ];
    return () => {
      offs.forEach((off) => off());
      sub.close();
    };
  }, [opts.url, channel, location, events, opts.snapshot, opts.conflate, keep]);

  return view;
}
