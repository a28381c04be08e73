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
