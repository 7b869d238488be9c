// Both WebSocket implementations a user passes must fit the option's type without a cast.
import type { WebSocketConstructor } from 'bistream-client';
import NodeWebSocket from 'ws';

export const fromWs: WebSocketConstructor = NodeWebSocket;
export const fromBrowser: WebSocketConstructor = globalThis.WebSocket;
