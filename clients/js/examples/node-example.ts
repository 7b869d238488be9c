// Node ≥ 20: pass the `ws` package's WebSocket; it also lets the token travel in a header.
import WebSocket from 'ws';
import { Subscription } from 'bistream-client';

interface Commission {
  agent: string;
  commission: number;
}

const sub = new Subscription<Commission>({
  url: process.env.BISTREAM_URL ?? 'ws://127.0.0.1:8000',
  channel: 'revenue-intelligence',
  location: 'loc-1',
  token: process.env.BISTREAM_TOKEN,
  tokenTransport: 'header',
  WebSocket,
});

sub.on('state', (s) => console.error(`[${s.state}]`, s.delayMs === undefined ? '' : `retry in ${Math.round(s.delayMs)} ms`));
sub.on('recovered', (r) => {
  if (!r.complete) console.error('events were lost while disconnected: reload from the REST API');
});
sub.on('error', (e) => console.error(e.final ? 'giving up:' : 'warning:', e.message));

process.on('SIGINT', () => sub.close());
for await (const e of sub) {
  console.log(e.seq, e.eventType, e.data.agent, e.data.commission);
}
