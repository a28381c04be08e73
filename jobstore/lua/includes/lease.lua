-- Leases (jobstore.layout.StoreKeys.leases): lease times are the server's (TIME, in ms), never a
-- client's; a record's attempt count is read like a write count (up to jobstore.rules.MAX_COUNT_DIGITS
-- digits, else 0).
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function attempts_of(key)
  local v = redis.call('HGET', key, 'attempts')
  if v and #v <= {{ MAX_COUNT_DIGITS }} and string.match(v, '^%d+$') then return tonumber(v) end
  return 0
end
