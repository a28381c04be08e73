-- Leases (jobstore.layout.StoreKeys.leases): lease times are the server's (TIME, in ms), never a
-- client's; a record's attempt count is read like a write count (jobstore.rules.count).
--- @include "count"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function attempts_of(key)
  return stored_count(redis.call('HGET', key, 'attempts'))
end
-- The leases that ran out by now (ms, server time): at most limit of them, the oldest first.
local function expired_leases(leases, now, limit)
  return redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, limit)
end
-- The member of the leases that stands for a claim list (a dequeue's, until it finishes).
local function list_lease(list) return 'list:' .. list end
-- A claim list's entries back to the queue's oldest end, in order (each through fix, when
-- given), and the list gone; returns how many went back.
local function return_list(list, queue, fix)
  local rest = redis.call('LRANGE', list, 0, -1)
  if fix then
    for n, item in ipairs(rest) do rest[n] = fix(item) end
  end
  if #rest > 0 then redis.call('RPUSH', queue, unpack(rest)) end
  redis.call('DEL', list)
  return #rest
end
