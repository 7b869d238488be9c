'use client';

import { useEffect } from 'react';
import { useBistream } from './useBistream';

interface Revenue {
  revenue_today: number;
  orders: number;
  currency: string;
}

/** Your Next.js app mints short-lived tokens server-side, e.g. in app/api/bistream-token/route.ts. */
async function fetchToken(): Promise<string> {
  const res = await fetch('/api/bistream-token', { cache: 'no-store' });
  if (!res.ok) throw new Error(`token endpoint answered ${res.status}`);
  return res.text();
}

export function RevenueTicker({ location, reload }: { location: string; reload: () => void }) {
  const { events, state, recovered } = useBistream<Revenue>('dashboard', location, {
    url: process.env.NEXT_PUBLIC_BISTREAM_URL,
    token: fetchToken,
    events: ['REVENUE_UPDATE'],
    snapshot: true,
  });

  // Events were lost while disconnected (e.g. the server restarted): refetch the full state.
  useEffect(() => {
    if (recovered && !recovered.complete) reload();
  }, [recovered, reload]);

  const latest = events[0]?.data;
  return (
    <section>
      <p>{state === 'open' ? 'live' : `${state}…`}</p>
      {latest && (
        <p>
          {latest.revenue_today.toLocaleString(undefined, { style: 'currency', currency: latest.currency })} from {latest.orders}{' '}
          orders
        </p>
      )}
    </section>
  );
}
