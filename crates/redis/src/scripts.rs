//! The Lua scripts that make each broker step atomic in Redis.
//!
//! Keys (prefix `P`, channel `C`, node `N`):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P:channels` | set | every channel id |
//! | `P:ch:C` | hash | `config` (JSON), `created`, `epoch`, `offset`, `ret` (retention), `keep` (stream length), `maxsubs`; for an auto-created channel `auto` (1), `active` (last publish or join, ms) and `idle` (when a sweep first saw it with no subscriber, ms); `rr`, the `rpc-dispatch = one` round-robin counter, once used |
//! | `P:st:C` | stream | the last `keep` `channel-message` frames, entry id `<offset>-0`, with a TTL |
//! | `P:subs:C` | hash | node id → its local subscriber count |
//! | `P:nodes` | sorted set | node id → when its liveness expires (ms) |
//! | `P:conns` | hash | node id → its connection count |
//! | `P:pres:C:N` | hash | the connections of node N subscribed to channel C when its `presence` or `join-leave` is on: connection id → `{"user-id","info"}` |
//! | `P:presn:C` | set | the nodes with a presence hash of C |
//! | `P:presc:N` | set | the channels node N has a presence hash of |
//!
//! Pub/sub channels: `P:m:C` (a channel's messages, frames and delete
//! notice, in stream order), `P:n:N` (to one node), `P:all` (broadcasts).
//!
//! A node counts toward a channel only while its entry in `P:nodes` is
//! fresh; a script that meets a dead node's count removes it.

use redis::Script;

/// Functions every script shares.
const PRELUDE: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Subscribers of live nodes in a subs hash, but `except`'s; dead nodes'
-- counts are removed on the way.
local function live_count(subs, nodes, now, except)
  local flat = redis.call('HGETALL', subs)
  local n = 0
  for i = 1, #flat, 2 do
    local node = flat[i]
    local exp = redis.call('ZSCORE', nodes, node)
    if exp and tonumber(exp) > now then
      if node ~= except then n = n + tonumber(flat[i + 1]) end
    else
      redis.call('HDEL', subs, node)
    end
  end
  return n
end
-- Creates channel `id` at `meta` unless the server has `max` channels.
-- Returns an error reply or nil.
local function create(meta, channels, id, config, ret, keep, maxsubs, max, epoch, now)
  if redis.call('SCARD', channels) >= tonumber(max) then
    return {'err', 'max-channels'}
  end
  redis.call('HSET', meta, 'config', config, 'created', now, 'epoch', epoch,
    'offset', 0, 'ret', ret, 'keep', keep, 'maxsubs', maxsubs)
  redis.call('SADD', channels, id)
  return nil
end
-- A deleted channel's presence, on every node.
local function drop_presence(prefix, id)
  local presn = prefix .. ':presn:' .. id
  for _, node in ipairs(redis.call('SMEMBERS', presn)) do
    redis.call('DEL', prefix .. ':pres:' .. id .. ':' .. node)
    redis.call('SREM', prefix .. ':presc:' .. node, id)
  end
  redis.call('DEL', presn)
end
-- Frame and exclude address of each stream entry, flattened.
local function entries_of(entries)
  local out = {}
  for i = 1, #entries do
    local fields = entries[i][2]
    local f, x = nil, '-'
    for j = 1, #fields, 2 do
      if fields[j] == 'f' then f = fields[j + 1] end
      if fields[j] == 'x' then x = fields[j + 1] end
    end
    if f then out[#out + 1] = f; out[#out + 1] = x end
  end
  return out
end
-- A channel's history length: max(history-size, message-retention), from
-- its config's JSON (channels made before history-size had only `ret`).
local function history_len(config, ret)
  local ok, c = pcall(cjson.decode, config)
  local size = 0
  if ok and type(c) == 'table' and type(c['history-size']) == 'number' then
    size = c['history-size']
  end
  return math.max(size, ret)
end
local function frames_of(entries)
  local out = {}
  for i = 1, #entries do
    local fields = entries[i][2]
    for j = 1, #fields, 2 do
      if fields[j] == 'f' then out[#out + 1] = fields[j + 1] end
    end
  end
  return out
end
"#;

/// Publish: offset, stream append with TTL, cluster count and the
/// pub/sub message, in one step.
///
/// KEYS: meta, stream, subs, nodes, channels, message channel.
/// ARGV: frame head, exclude address or `-`, auto-create (`1`/`0`),
/// default config, ret, keep, maxsubs, max channels, new epoch, channel id,
/// stream TTL (ms), deadline (ms since the epoch: the node answered
/// `broker-unavailable` by then, so a publish Redis reaches later must not
/// happen).
const PUBLISH: &str = r#"
local now = now_ms()
if now > tonumber(ARGV[12]) then return {'err', 'expired'} end
local created = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  if ARGV[3] ~= '1' then return {'err', 'not-found'} end
  local e = create(KEYS[1], KEYS[5], ARGV[10], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], now)
  if e then return e end
  created = 1
  redis.call('HSET', KEYS[1], 'auto', 1)
end
redis.call('HSET', KEYS[1], 'active', now)
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local keep = tonumber(redis.call('HGET', KEYS[1], 'keep'))
local frame = ARGV[1] .. '"offset":' .. offset .. ',"epoch":"' .. epoch .. '"}'
redis.call('XADD', KEYS[2], 'MAXLEN', keep, offset .. '-0', 'f', frame, 'x', ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[11])
local n = live_count(KEYS[3], KEYS[4], now, nil)
redis.call('PUBLISH', KEYS[6], 'M' .. offset .. ' ' .. epoch .. ' ' .. ARGV[2] .. '\n' .. frame)
return {'ok', offset, epoch, n, created}
"#;

/// Join: the channel's state at one stream position, this node's count
/// raised by one for the joiner (the node lowers it again if the join does
/// not happen), and a marker on this node's channel at that position.
/// The frames returned are the newest `ret` of the stream, or more when the
/// joiner recovers: as many as it missed, when that is possible at all (its
/// epoch, at most the max and the history's length behind); the node checks
/// them ([`history::recover`]) and applies the history's age.
///
/// KEYS: meta, stream, subs, nodes, channels, node channel.
/// ARGV: auto-create, default config, ret, keep, maxsubs, max channels,
/// new epoch, channel id, node id, marker token, deadline (as for publish:
/// a join Redis reaches after the joiner gave up must not count it),
/// recover (`1`/`0`), its offset, its epoch, max recovery messages.
///
/// [`history::recover`]: sente_lite_channels::history::recover
const JOIN: &str = r#"
local now = now_ms()
if now > tonumber(ARGV[11]) then return {'err', 'expired'} end
local created = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  if ARGV[1] ~= '1' then return {'err', 'not-found'} end
  local e = create(KEYS[1], KEYS[5], ARGV[8], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], now)
  if e then return e end
  created = 1
  redis.call('HSET', KEYS[1], 'auto', 1)
end
local m = redis.call('HMGET', KEYS[1], 'config', 'offset', 'epoch', 'ret', 'maxsubs')
local others = live_count(KEYS[3], KEYS[4], now, ARGV[9])
local mine = tonumber(redis.call('HGET', KEYS[3], ARGV[9]) or '0')
if others + mine >= tonumber(m[5]) then
  return {'err', 'max-subscribers', m[5]}
end
redis.call('HINCRBY', KEYS[3], ARGV[9], 1)
redis.call('HSET', KEYS[1], 'active', now)
local frames = {}
local ret = tonumber(m[4])
local n = ret
if ARGV[12] == '1' and ARGV[14] == m[3] then
  local missed = tonumber(m[2]) - tonumber(ARGV[13])
  if missed > 0 and missed <= tonumber(ARGV[15]) and missed <= history_len(m[1], ret) then
    n = math.max(n, missed)
  end
end
if n > 0 then
  frames = frames_of(redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', n))
end
redis.call('PUBLISH', KEYS[6], 'K' .. ARGV[10])
local out = {'ok', m[1], m[2], m[3], others, created}
for i = #frames, 1, -1 do out[#out + 1] = frames[i] end
return out
"#;

/// Change this node's count of a channel by ARGV[2] (removed at 0).
///
/// KEYS: subs. ARGV: node id, delta.
const COUNT: &str = r#"
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return n
"#;

/// A frame to a channel's subscribers outside the stream.
///
/// KEYS: subs, nodes, message channel. ARGV: exclude address or `-`, frame,
/// deadline (as for publish).
const SEND: &str = r#"
local now = now_ms()
if now > tonumber(ARGV[3]) then return -1 end
local n = live_count(KEYS[1], KEYS[2], now, nil)
redis.call('PUBLISH', KEYS[3], 'F' .. ARGV[1] .. '\n' .. ARGV[2])
return n
"#;

/// One channel's state, or nil.
///
/// KEYS: meta, subs, nodes.
const INFO: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return nil end
local m = redis.call('HMGET', KEYS[1], 'config', 'created', 'offset', 'epoch')
return {m[1], m[2], m[3], m[4], live_count(KEYS[2], KEYS[3], now_ms(), nil)}
"#;

/// Every channel's state: id, config, created, offset, epoch, count, ...
///
/// KEYS: channels, nodes. ARGV: key prefix.
const LIST: &str = r#"
local now = now_ms()
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local meta = ARGV[1] .. ':ch:' .. id
  local m = redis.call('HMGET', meta, 'config', 'created', 'offset', 'epoch')
  if m[1] then
    local n = live_count(ARGV[1] .. ':subs:' .. id, KEYS[2], now, nil)
    for _, v in ipairs({id, m[1], m[2], m[3], m[4], n}) do out[#out + 1] = v end
  else
    redis.call('SREM', KEYS[1], id)
  end
end
return out
"#;

/// The channel's history: its config, epoch, offset and the newest
/// `max(history-size, message-retention)` frames of its stream, oldest
/// first; nil when there is no channel. The node applies the history's age.
///
/// KEYS: meta, stream.
const HISTORY: &str = r#"
local m = redis.call('HMGET', KEYS[1], 'config', 'ret', 'epoch', 'offset')
if not m[1] then return nil end
local out = {m[1], m[3], m[4]}
local n = history_len(m[1], tonumber(m[2]))
if n > 0 then
  local frames = frames_of(redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', n))
  for i = #frames, 1, -1 do out[#out + 1] = frames[i] end
end
return out
"#;

/// Create a channel: `ok`, `exists` or `max-channels`.
///
/// KEYS: meta, channels. ARGV: id, config, ret, keep, maxsubs, max, epoch.
const CREATE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return {'err', 'exists'} end
local e = create(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], now_ms())
if e then return e end
return {'ok'}
"#;

/// Delete a channel and tell every node: its subscriber count and the
/// deleted epoch, or nil.
///
/// KEYS: meta, stream, subs, nodes, channels, message channel. ARGV: id.
const DELETE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return nil end
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local n = live_count(KEYS[3], KEYS[4], now_ms(), nil)
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('SREM', KEYS[5], ARGV[1])
drop_presence(string.sub(KEYS[1], 1, #KEYS[1] - #(':ch:' .. ARGV[1])), ARGV[1])
redis.call('PUBLISH', KEYS[6], 'D' .. epoch)
return {n, epoch}
"#;

/// Idle channels: every auto-created channel with no subscriber on a live
/// node, first seen so by a sweep (`idle`) and with no publish or join
/// (`active`) for ARGV[2] ms, is deleted as DELETE does (every node hears
/// `D`); a channel with subscribers loses its `idle` mark. Any node may run
/// it, any number of times: each step is atomic. Returns how many it
/// deleted.
///
/// KEYS: channels, nodes. ARGV: prefix, ttl ms.
const SWEEP: &str = r#"
local now = now_ms()
local ttl = tonumber(ARGV[2])
local removed = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local meta = ARGV[1] .. ':ch:' .. id
  local m = redis.call('HMGET', meta, 'auto', 'active', 'idle', 'epoch')
  if not m[4] then
    redis.call('SREM', KEYS[1], id)
  elseif m[1] == '1' then
    local subs = ARGV[1] .. ':subs:' .. id
    if live_count(subs, KEYS[2], now, nil) > 0 then
      if m[3] then redis.call('HDEL', meta, 'idle') end
    elseif not m[3] then
      redis.call('HSET', meta, 'idle', now)
    else
      local since = math.max(tonumber(m[3]), tonumber(m[2] or '0'))
      if now - since >= ttl then
        redis.call('DEL', meta, ARGV[1] .. ':st:' .. id, subs)
        redis.call('SREM', KEYS[1], id)
        drop_presence(ARGV[1], id)
        redis.call('PUBLISH', ARGV[1] .. ':m:' .. id, 'D' .. m[4])
        removed = removed + 1
      end
    end
  end
end
return removed
"#;

/// After a reconnect: the channel's epoch, offset, the first offset still in
/// the stream after `from`, and the frames after `from` (oldest first) each
/// with its exclude address, or nil when the channel is gone.
///
/// KEYS: meta, stream. ARGV: from offset.
const RECOVER: &str = r#"
local m = redis.call('HMGET', KEYS[1], 'epoch', 'offset', 'keep')
if not m[1] then return nil end
local entries = redis.call('XRANGE', KEYS[2], '(' .. ARGV[1] .. '-0', '+', 'COUNT', m[3])
local first = 0
if #entries > 0 then first = tonumber(string.match(entries[1][1], '^(%d+)')) end
local out = {m[1], m[2], first}
for _, v in ipairs(entries_of(entries)) do out[#out + 1] = v end
return out
"#;

/// Liveness: refresh this node, drop expired ones, and read the cluster's
/// totals: live nodes, channels, subscriptions, other nodes' connections.
///
/// KEYS: nodes, channels, conns. ARGV: node id, ttl ms, connections, prefix.
const HEARTBEAT: &str = r#"
local now = now_ms()
-- Lapsed: this node's entry was gone or expired, so scripts may have
-- dropped its counts; it rewrites them.
local prev = redis.call('ZSCORE', KEYS[1], ARGV[1])
local lapsed = 0
if (not prev) or tonumber(prev) <= now then lapsed = 1 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
-- Nodes whose liveness expired: their connections leave every presence
-- channel (a `leave` to the subscribers of a join-leave channel).
for _, dead in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  local presc = ARGV[4] .. ':presc:' .. dead
  for _, c in ipairs(redis.call('SMEMBERS', presc)) do
    local key = ARGV[4] .. ':pres:' .. c .. ':' .. dead
    local config = redis.call('HGET', ARGV[4] .. ':ch:' .. c, 'config')
    local ok, cfg = pcall(cjson.decode, config or '{}')
    if ok and type(cfg) == 'table' and cfg['join-leave'] == true then
      local flat = redis.call('HGETALL', key)
      for i = 1, #flat, 2 do
        local ok2, who = pcall(cjson.decode, flat[i + 1])
        local leave = {type = 'leave', ['channel-id'] = c, ['conn-id'] = flat[i],
          ['user-id'] = cjson.null}
        if ok2 and type(who) == 'table' and type(who['user-id']) == 'string' then
          leave['user-id'] = who['user-id']
        end
        redis.call('PUBLISH', ARGV[4] .. ':m:' .. c, 'F-\n' .. cjson.encode(leave))
      end
    end
    redis.call('DEL', key)
    redis.call('SREM', ARGV[4] .. ':presn:' .. c, dead)
  end
  redis.call('DEL', presc)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
local nodes = redis.call('ZRANGE', KEYS[1], 0, -1)
local conns = 0
local live = {}
for _, n in ipairs(nodes) do
  live[n] = true
  if n ~= ARGV[1] then conns = conns + tonumber(redis.call('HGET', KEYS[3], n) or '0') end
end
for _, n in ipairs(redis.call('HKEYS', KEYS[3])) do
  if not live[n] then redis.call('HDEL', KEYS[3], n) end
end
local subs = 0
local ids = redis.call('SMEMBERS', KEYS[2])
for _, id in ipairs(ids) do
  subs = subs + live_count(ARGV[4] .. ':subs:' .. id, KEYS[1], now, nil)
end
return {lapsed, #ids, subs, conns, unpack(nodes)}
"#;

/// After a (re)connect: this node's counts as they are now, nothing else
/// of it left from before.
///
/// KEYS: channels. ARGV: prefix, node id, then channel, count pairs.
const RESYNC: &str = r#"
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  redis.call('HDEL', ARGV[1] .. ':subs:' .. id, ARGV[2])
end
for i = 3, #ARGV, 2 do
  if redis.call('EXISTS', ARGV[1] .. ':ch:' .. ARGV[i]) == 1 then
    redis.call('HSET', ARGV[1] .. ':subs:' .. ARGV[i], ARGV[2], ARGV[i + 1])
  end
end
return 1
"#;

/// `rpc-dispatch = one`: the live nodes with subscribers of the channel,
/// in the order to try them: first the one holding the next subscriber of
/// a cluster-wide round robin (a counter in the channel's hash), then the
/// others by name after it. Empty when the channel does not exist or has
/// no subscriber on a live node.
///
/// KEYS: meta, subs, nodes.
const PICK: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
local now = now_ms()
local flat = redis.call('HGETALL', KEYS[2])
local nodes = {}
local total = 0
for i = 1, #flat, 2 do
  local exp = redis.call('ZSCORE', KEYS[3], flat[i])
  local n = tonumber(flat[i + 1])
  if exp and tonumber(exp) > now and n > 0 then
    nodes[#nodes + 1] = {flat[i], n}
    total = total + n
  end
end
if total == 0 then return {} end
table.sort(nodes, function(a, b) return a[1] < b[1] end)
local k = redis.call('HINCRBY', KEYS[1], 'rr', 1) % total
local start, acc = 1, 0
for i = 1, #nodes do
  acc = acc + nodes[i][2]
  if k < acc then start = i; break end
end
local out = {}
for i = 0, #nodes - 1 do out[#out + 1] = nodes[((start - 1 + i) % #nodes) + 1][1] end
return out
"#;

/// A connection joined a presence channel.
///
/// KEYS: presence hash (of the channel and this node), the channel's node
/// set, this node's channel set. ARGV: node id, channel id, connection id,
/// its `{"user-id","info"}` JSON.
const PRES_ADD: &str = r#"
redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[2])
return 1
"#;

/// Connections left a presence channel.
///
/// KEYS: as PRES_ADD. ARGV: node id, channel id, connection ids.
const PRES_DEL: &str = r#"
for i = 3, #ARGV do redis.call('HDEL', KEYS[1], ARGV[i]) end
if redis.call('HLEN', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[2], ARGV[1])
  redis.call('SREM', KEYS[3], ARGV[2])
end
return 1
"#;

/// A channel's presence on every live node: connection id, JSON, ...; the
/// hashes of nodes that are not live are skipped (the heartbeat that sees
/// such a node expire sends their `leave` frames and removes them).
///
/// KEYS: the channel's node set, nodes. ARGV: prefix, channel id.
const PRESENCE: &str = r#"
local now = now_ms()
local out = {}
for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[1] .. ':pres:' .. ARGV[2] .. ':' .. node
  local exp = redis.call('ZSCORE', KEYS[2], node)
  if exp and tonumber(exp) > now then
    local flat = redis.call('HGETALL', key)
    for i = 1, #flat do out[#out + 1] = flat[i] end
  end
end
return out
"#;

/// After a (re)connect: this node's presence as it is now, nothing else of
/// it left from before.
///
/// KEYS: this node's channel set. ARGV: prefix, node id, then channel,
/// connection id, JSON triples.
const PRES_RESYNC: &str = r#"
for _, c in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  redis.call('DEL', ARGV[1] .. ':pres:' .. c .. ':' .. ARGV[2])
  redis.call('SREM', ARGV[1] .. ':presn:' .. c, ARGV[2])
end
redis.call('DEL', KEYS[1])
for i = 3, #ARGV, 3 do
  redis.call('HSET', ARGV[1] .. ':pres:' .. ARGV[i] .. ':' .. ARGV[2], ARGV[i + 1], ARGV[i + 2])
  redis.call('SADD', ARGV[1] .. ':presn:' .. ARGV[i], ARGV[2])
  redis.call('SADD', KEYS[1], ARGV[i])
end
return 1
"#;

/// The scripts, loaded on first use (EVALSHA, falling back to EVAL once).
pub(crate) struct Scripts {
    pub(crate) publish: Script,
    pub(crate) join: Script,
    pub(crate) count: Script,
    pub(crate) send: Script,
    pub(crate) info: Script,
    pub(crate) list: Script,
    pub(crate) history: Script,
    pub(crate) create: Script,
    pub(crate) delete: Script,
    pub(crate) recover: Script,
    pub(crate) heartbeat: Script,
    pub(crate) resync: Script,
    pub(crate) sweep: Script,
    pub(crate) pres_add: Script,
    pub(crate) pres_del: Script,
    pub(crate) presence: Script,
    pub(crate) pres_resync: Script,
    pub(crate) pick: Script,
}

impl Scripts {
    /// Every script, to load them all at once after a connect.
    pub(crate) fn all(&self) -> [&Script; 18] {
        [
            &self.publish,
            &self.join,
            &self.count,
            &self.send,
            &self.info,
            &self.list,
            &self.history,
            &self.create,
            &self.delete,
            &self.recover,
            &self.heartbeat,
            &self.resync,
            &self.sweep,
            &self.pres_add,
            &self.pres_del,
            &self.presence,
            &self.pres_resync,
            &self.pick,
        ]
    }

    pub(crate) fn new() -> Scripts {
        let s = |body: &str| Script::new(&format!("{PRELUDE}\n{body}"));
        Scripts {
            publish: s(PUBLISH),
            join: s(JOIN),
            count: s(COUNT),
            send: s(SEND),
            info: s(INFO),
            list: s(LIST),
            history: s(HISTORY),
            create: s(CREATE),
            delete: s(DELETE),
            recover: s(RECOVER),
            heartbeat: s(HEARTBEAT),
            resync: s(RESYNC),
            sweep: s(SWEEP),
            pres_add: s(PRES_ADD),
            pres_del: s(PRES_DEL),
            presence: s(PRESENCE),
            pres_resync: s(PRES_RESYNC),
            pick: s(PICK),
        }
    }
}
