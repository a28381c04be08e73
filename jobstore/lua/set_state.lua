-- KEYS[1] migration state hash   KEYS[2] migration log list
-- ARGV[1] the phase the caller based its decision on ('' when none was stored)
-- ARGV[2] the phase_since it based it on ('' = any)   ARGV[3] log entry (JSON, '' = none)
-- ARGV[4] the failed_ticket it based it on ('' = any: a change no verify decides)
-- ARGV[5 ..] field, value pairs to set (only the fields this change sets)
-- returns 1 written | 0 the stored phase, or the newest failed verify, changed meanwhile
--         (nothing written)
-- Compare-and-set, so two operators switching at once cannot both win, a switch decided on a
-- verify's evidence is not made once a newer verify has recorded problems, and a change writes
-- only its own fields: a verify's or a reverse sync's record written meanwhile is never wiped.
local current = redis.call('HGET', KEYS[1], 'phase') or ''
if current ~= ARGV[1] then return 0 end
if ARGV[2] ~= '' and (redis.call('HGET', KEYS[1], 'phase_since') or '') ~= ARGV[2] then return 0 end
if ARGV[4] ~= '' and (redis.call('HGET', KEYS[1], 'failed_ticket') or '0') ~= ARGV[4] then
  return 0
end
if #ARGV >= 6 then
  local fields = {}
  for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
  redis.call('HSET', KEYS[1], unpack(fields))
end
if ARGV[3] ~= '' then
  redis.call('LPUSH', KEYS[2], ARGV[3])
  redis.call('LTRIM', KEYS[2], 0, 999)
end
return 1
