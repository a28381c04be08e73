-- KEYS[1] record to write   KEYS[2] its tombstone   KEYS[3] the workspace index (or any key
--         of this slot, when the index lives elsewhere)
-- ARGV[1] job id   ARGV[2] ttl in ms (0: none)   ARGV[3] '1' to add to the index
-- ARGV[4] created_at   ARGV[5] workspace id   ARGV[6 ..] field, value pairs
-- returns 'copied' | 'exists' | 'tombstoned' (this incarnation was deleted: not brought back)
--         | 'not_a_record'
--- @include "time"
if redis.call('HEXISTS', KEYS[2], ARGV[5] .. ':' .. ARGV[4]) == 1 then return 'tombstoned' end
local kind = redis.call('TYPE', KEYS[1]).ok
if kind ~= 'none' then return kind == 'hash' and 'exists' or 'not_a_record' end
for i = 6, #ARGV, 1000 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if ARGV[3] == '1' then redis.call('ZADD', KEYS[3], 'NX', to_epoch(ARGV[4]) or 0, ARGV[1]) end
return 'copied'
