"""The Lua scripts the replicas' shared state runs on Redis.

Each runs atomically on the server and reads the server's clock, so replicas whose
clocks disagree still agree on every budget.

Rate budgets (``TAKE``, ``GIVE``) are GCRA cells: one key each, holding the
theoretical arrival time in microseconds.

Spending windows (``HOLD``, ``SETTLE``, ``COMMIT``) are one hash and one sorted set
per (subject, period, period start). The database's spend counters stay the truth;
Redis holds only what they cannot show yet:

- ``open``: the estimates held for requests in flight or answered but not yet committed
  to the database (replaced by the real cost when that is more, or when the budget is
  close enough to its limit that holding the difference could refuse someone), each under
  ``i:<id>``, with an expiry in the sorted set (a replica that dies mid-request does not
  hold its estimate forever);
- ``d:<slot>``: costs committed in each 50 ms slot of the last minute.

A replica checks ``its last read of the database + open + committed since that read``
against the limit: what its read already counts is not counted again, what it cannot
have seen is. Amounts are integers in nano-USD.
"""

from __future__ import annotations

TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local next = {}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[i * 3 - 2])
  local tolerance = tonumber(ARGV[i * 3 - 1])
  local cost = interval * tonumber(ARGV[i * 3])
  if cost > tolerance then cost = tolerance end
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  local new = tat + cost
  if new - now > tolerance then
    return {0, new - tolerance - now}
  end
  next[i] = new
end
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], string.format('%d', next[i]), 'PX',
             math.floor((next[i] - now) / 1000) + 1000)
end
return {1, 0}
"""

GIVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
local new = tat - tonumber(ARGV[1]) * tonumber(ARGV[2])
if new <= now then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], string.format('%d', new), 'PX',
             math.floor((new - now) / 1000) + 1000)
end
return 1
"""

#: This process is alive: count the processes that said so within ARGV[2] µs.
BEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], 60000)
return redis.call('ZCARD', KEYS[1])
"""

#: Microseconds per slot of committed spending, and how many slots are kept.
SLOT_US = 50_000
SLOTS_KEPT = 1200

#: How long the keys of a window outlive their last use, in milliseconds.
WINDOW_TTL_MS = 30 * 60 * 1000

_SPEND_COMMON = f"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local slot_us = {SLOT_US}
local kept = {SLOTS_KEPT}
local ttl = {WINDOW_TTL_MS}
local function n(x) return string.format('%d', x) end
local function drop(h, e, id)
  local amount = tonumber(redis.call('HGET', h, 'i:' .. id) or 0)
  redis.call('HDEL', h, 'i:' .. id)
  redis.call('ZREM', e, id)
  if amount ~= 0 then redis.call('HINCRBY', h, 'open', n(-amount)) end
  return amount
end
local function touch(h, e)
  redis.call('PEXPIRE', h, ttl)
  redis.call('PEXPIRE', e, ttl)
end
"""

#: Hold an estimate in every window, or in none. KEYS: hash and sorted set per window.
#: ARGV: id, hold (µs), then per window: limit, the caller's database total, the Redis
#: time of the caller's read (µs), estimate. Returns {1, 0, least left after it}, or
#: {0, window, spent}.
HOLD = (
    _SPEND_COMMON
    + """
local id = ARGV[1]
local hold = tonumber(ARGV[2])
local windows = #KEYS / 2
local least = nil
-- A pipeline replayed after a lost connection must not hold the same estimate twice.
if redis.call('HEXISTS', KEYS[1], 'i:' .. id) == 1 then return {1, 0, 0} end
for i = 1, windows do
  local h, e = KEYS[2 * i - 1], KEYS[2 * i]
  for _, gone in ipairs(redis.call('ZRANGEBYSCORE', e, '-inf', now, 'LIMIT', 0, 100)) do
    drop(h, e, gone)
  end
  local limit = tonumber(ARGV[4 * i - 1])
  local read_at = tonumber(ARGV[4 * i + 1])
  local estimate = tonumber(ARGV[4 * i + 2])
  local last = math.floor(now / slot_us)
  local first = math.max(math.floor(read_at / slot_us), last - kept)
  local fields = {}
  for s = first, last do fields[#fields + 1] = 'd:' .. s end
  local spent = tonumber(ARGV[4 * i]) + tonumber(redis.call('HGET', h, 'open') or 0)
  for _, v in ipairs(redis.call('HMGET', h, unpack(fields))) do
    if v then spent = spent + tonumber(v) end
  end
  if spent + estimate > limit or spent >= limit then
    return {0, i, spent}
  end
  local after = limit - spent - estimate
  if least == nil or after < least then least = after end
end
for i = 1, windows do
  local h, e = KEYS[2 * i - 1], KEYS[2 * i]
  local estimate = ARGV[4 * i + 2]
  redis.call('HINCRBY', h, 'open', estimate)
  redis.call('HSET', h, 'i:' .. id, estimate)
  redis.call('ZADD', e, now + hold, id)
  touch(h, e)
end
return {1, 0, least}
"""
)

#: Replace a held estimate by the real cost, until the database has it (or let it go
#: when nothing was spent). ARGV: id, how long to keep the cost (µs), cost.
SETTLE = (
    _SPEND_COMMON
    + """
local id = ARGV[1]
local keep = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
for i = 1, #KEYS / 2 do
  local h, e = KEYS[2 * i - 1], KEYS[2 * i]
  drop(h, e, id)
  if cost > 0 then
    redis.call('HINCRBY', h, 'open', ARGV[3])
    redis.call('HSET', h, 'i:' .. id, ARGV[3])
    redis.call('ZADD', e, now + keep, id)
  end
  touch(h, e)
end
return 1
"""
)

#: The database has committed these records: each one's held amount leaves ``open``, and
#: its cost goes to this slot (a record no longer held, let go or committed already, is
#: not counted again); slots older than anyone's read can be are forgotten.
#: ARGV: id, cost, id, cost, ...
COMMIT = (
    _SPEND_COMMON
    + """
local slot = math.floor(now / slot_us)
for i = 1, #KEYS / 2 do
  local h, e = KEYS[2 * i - 1], KEYS[2 * i]
  local committed = 0
  for j = 1, #ARGV, 2 do
    -- Only what was still open: a replayed commit is not counted twice.
    if drop(h, e, ARGV[j]) ~= 0 then committed = committed + tonumber(ARGV[j + 1]) end
  end
  if committed ~= 0 then redis.call('HINCRBY', h, 'd:' .. slot, n(committed)) end
  -- Slots exist from gc to gc + kept at most: forget those older than anyone's read.
  local oldest = slot - kept
  local gc = tonumber(redis.call('HGET', h, 'gc') or oldest)
  if gc < oldest then
    local old = {}
    for s = gc, math.min(oldest - 1, gc + kept) do old[#old + 1] = 'd:' .. s end
    redis.call('HDEL', h, unpack(old))
  end
  redis.call('HSET', h, 'gc', oldest)
  touch(h, e)
end
return 1
"""
)
