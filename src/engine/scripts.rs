//! The server-side scripts of the Redis engine. Each touches the keys of one
//! stream only (declared in `KEYS`, all in one hash slot), so each is atomic
//! and would run unchanged on Redis Cluster. The key layout is `engine::wire`'s.

/// One stream event, atomically: take or create the stream's epoch (a new
/// one starts with no history and no last values: what an eviction of the
/// counter alone left behind belongs to a lost epoch), number the event,
/// append it to history (capped, with the stream's TTL), make it the last
/// value of its key (capped per stream), and publish it.
///
/// KEYS: meta, hist, last, order.
/// ARGV: 1 epoch to create when there is none, 2 JSON before the seq, 3 JSON
/// after it, 4 event type, 5 key as published (may be empty), 6 history size,
/// 7 last values per stream, 8 TTL in ms, 9 the events channel.
/// Returns `{epoch, seq}`.
pub const PUBLISH: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', 0)
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local json = ARGV[2] .. seq .. ARGV[3]
local stored = seq .. '\n' .. ARGV[4] .. '\n' .. ARGV[5] .. '\n' .. json
local hist = tonumber(ARGV[6])
if hist > 0 then
  redis.call('RPUSH', KEYS[2], stored)
  redis.call('LTRIM', KEYS[2], -hist, -1)
end
local cap = tonumber(ARGV[7])
if cap > 0 then
  local key = ARGV[5]
  if key == '' then key = ARGV[4] end
  redis.call('HSET', KEYS[3], key, stored)
  redis.call('ZADD', KEYS[4], seq, key)
  local n = redis.call('ZCARD', KEYS[4])
  if n > cap then
    local old = redis.call('ZPOPMIN', KEYS[4], n - cap)
    for i = 1, #old, 2 do redis.call('HDEL', KEYS[3], old[i]) end
  end
end
local ttl = tonumber(ARGV[8])
for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ttl) end
redis.call('PUBLISH', ARGV[9], seq .. '\n' .. epoch .. '\n' .. ARGV[4] .. '\n' .. ARGV[5] .. '\n' .. json)
return {epoch, seq}
"#;

/// A stream's whole state, creating its epoch if no node has yet (empty, as
/// in [`PUBLISH`]), and renewing its TTL (a node with subscribers keeps the
/// stream alive).
///
/// KEYS: meta, hist, last, order. ARGV: 1 epoch to create, 2 TTL in ms.
/// Returns `{epoch, seq, {history...}, {last values...}}`.
pub const FETCH: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', 0)
end
local seq = redis.call('HGET', KEYS[1], 'seq')
local hist = redis.call('LRANGE', KEYS[2], 0, -1)
local last = redis.call('HVALS', KEYS[3])
local ttl = tonumber(ARGV[2])
for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ttl) end
return {epoch, seq, hist, last}
"#;

/// A node found the stream's state older than what it already delivered
/// (a restore from an older snapshot, a failover to a lagging replica): start
/// a new epoch, unless another node already did. Then as [`FETCH`].
///
/// KEYS: meta, hist, last, order. ARGV: 1 the epoch found wanting, 2 the new
/// epoch, 3 TTL in ms.
pub const ROTATE: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if (not epoch) or epoch == ARGV[1] then
  epoch = ARGV[2]
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', 0)
end
local seq = redis.call('HGET', KEYS[1], 'seq')
local hist = redis.call('LRANGE', KEYS[2], 0, -1)
local last = redis.call('HVALS', KEYS[3])
local ttl = tonumber(ARGV[3])
for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ttl) end
return {epoch, seq, hist, last}
"#;
