-- Retention (docs/retention.md): a job moved to a final status expires, on every copy, at one
-- time of the server's clock: the call's ttl, else the one its enqueue asked for (the record's
-- _ttl field), else the store's finished_ttl; with none of them, never. A move among the other
-- statuses sets no expiry. Times in ms.
--- @include "lease"
local FINAL = {{ TERMINAL }}
local function ttl_ms(text)
  if text and #text <= {{ MAX_COUNT_DIGITS }} and string.match(text, '^%d+$') then
    local ms = tonumber(text)
    if ms > 0 then return ms end
  end
  return nil
end
-- when (server time, ms) a record (a table of its fields, as read) that moves to status now
-- expires; false: never
local function expiry_of(record, status, given, default)
  if not FINAL[status] then return false end
  local ms = ttl_ms(given) or ttl_ms(record[{{ TTL }}]) or ttl_ms(default)
  if not ms then return false end
  return now_ms() + ms
end
local function expire_all(keys, at)
  if at then
    for _, key in ipairs(keys) do redis.call('PEXPIREAT', key, at) end
  end
end
-- A copy of the job that its final move did not update (a schema the phase does not write, dual:
-- docs/retention.md) expires at the move's time too: if it exists, is the workspace's and does
-- not expire by then already (safe to apply twice). Returns 1 when it now expires then, else 0.
local function expire_copy(key, workspace_id, at)
  if redis.call('TYPE', key).ok ~= 'hash' then return 0 end
  if redis.call('HGET', key, 'workspace_id') ~= workspace_id then return 0 end
  local left = redis.call('PTTL', key)
  if left >= 0 and now_ms() + left <= at then return 0 end
  redis.call('PEXPIREAT', key, at)
  return 1
end
