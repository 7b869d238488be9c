//! The server-side scripts of the Redis engine. Each touches the keys of one
//! stream only (declared in `KEYS`, all in one hash slot), so each is atomic
//! and would run unchanged on Redis Cluster. The key layout is `engine::wire`'s.

/// Lua shared by the scripts that publish: with `cap` the last values per
/// stream, forget the keys published longest ago past it (`KEYS[3]` the last
/// values, `KEYS[4]` their order).
macro_rules! trim_last_values {
    () => {
        r#"  local count = redis.call('ZCARD', KEYS[4])
  if count > cap then
    local old = redis.call('ZPOPMIN', KEYS[4], count - cap)
    for i = 1, #old, 2 do redis.call('HDEL', KEYS[3], old[i]) end
  end
"#
    };
}

/// A run of events of one stream, atomically: take or create the stream's
/// epoch (a new one starts with no history and no last values: what an
/// eviction of the counter alone left behind belongs to a lost epoch), number
/// the events, append them to history (capped, with the stream's TTL), make
/// each the last value of its key (capped per stream), and publish them as
/// one message. One call for a run rather than one per event: the script's
/// fixed cost (its call, its arguments, the TTLs, the trim) is paid once, and
/// Redis's one thread is what bounds a cluster's publish rate.
///
/// KEYS: meta, hist, last, order.
/// ARGV: 1 epoch to create when there is none, 2 history size, 3 last values
/// per stream, 4 TTL in ms, 5 the events channel, then four per event: JSON
/// before the seq, JSON after it, event type, key as published (may be empty).
/// Returns `{epoch, seq of the last event}`.
///
/// The message is the epoch, then each event's stored form, separated by
/// `\x1e` (a byte that valid JSON, event types and keys never hold raw;
/// `engine::wire::parse_message`). Redis's Lua hashes every byte of every
/// string it makes, and formats numbers with `%.14g`: so each seq is
/// formatted once, as an integer, and each event's bytes are built once.
pub const PUBLISH: &str = concat!(
    r#"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', 0)
end
local n = (#ARGV - 5) / 4
if n < 1 or n ~= math.floor(n) then
  return redis.error_reply('ERR bistream publish: bad argument count')
end
local last = redis.call('HINCRBY', KEYS[1], 'seq', n)
local first = last - n + 1
local hist = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local fmt = string.format
-- msg[1] is the epoch, msg[i + 1] the i-th event's stored form.
local msg = {epoch}
-- Only a key's last event in the run becomes its last value: one field
-- and one score per key, however often the run repeats it.
local slot = {}
local fields = {}
local scores = {}
for i = 0, n - 1 do
  local a = 6 + i * 4
  local seq = fmt('%d', first + i)
  local s = seq .. '\n' .. ARGV[a + 2] .. '\n' .. ARGV[a + 3] .. '\n' .. ARGV[a] .. seq .. ARGV[a + 1]
  msg[i + 2] = s
  if cap > 0 then
    local key = ARGV[a + 3]
    if key == '' then key = ARGV[a + 2] end
    local k = slot[key]
    if not k then
      k = #fields + 1
      slot[key] = k
      fields[k] = key
      scores[k + 1] = key
    end
    fields[k + 1] = s
    scores[k] = seq
  end
end
if hist > 0 then
  local from = math.max(1, n - hist + 1)
  redis.call('RPUSH', KEYS[2], unpack(msg, from + 1, n + 1))
  redis.call('LTRIM', KEYS[2], -hist, -1)
end
if cap > 0 then
  redis.call('HSET', KEYS[3], unpack(fields))
  redis.call('ZADD', KEYS[4], unpack(scores))
"#,
    trim_last_values!(),
    r#"end
local ttl = ARGV[4]
for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ttl) end
redis.call('PUBLISH', ARGV[5], table.concat(msg, '\30'))
return {epoch, last}
"#
);

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

/// The part of publishing that needs a condition, inside the transaction of
/// `engine::transaction` (after its `RPUSH`, `HSET` and `ZADD`): set the
/// counter, trim history to its size and last values to their cap, renew the
/// TTLs. It takes no event bytes: building Lua strings from those is what
/// that transaction avoids. Sent with `EVAL`, never `EVALSHA`: a `NOSCRIPT`
/// inside `EXEC` would fail this command alone and let the others apply.
///
/// KEYS: meta, hist, last, order.
/// ARGV: 1 epoch, 2 seq of the last event, 3 history size, 4 last values
/// per stream, 5 TTL in ms.
pub const TAIL: &str = concat!(
    r#"
redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'seq', ARGV[2])
local hist = tonumber(ARGV[3])
if hist > 0 then redis.call('LTRIM', KEYS[2], -hist, -1) end
local cap = tonumber(ARGV[4])
if cap > 0 then
"#,
    trim_last_values!(),
    r#"end
for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[5]) end
return 1
"#
);
