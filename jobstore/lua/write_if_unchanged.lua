-- KEYS[1] record
-- ARGV[1] 'delete' | 'write'   ARGV[2] the remaining time (ms) to give the record with a write
-- ('0' none: that of the copy it is written from, which does not expire; docs/retention.md)
-- ARGV[3] n: how many field, value pairs the record had when read
-- ARGV[4 .. 3+2n] those pairs   ARGV[4+2n ..] field, value pairs to write (write)
-- returns 'done' | 'changed' (it is not exactly as it was read: nothing done)
-- Compares the whole record, not a time or a counter: a write by any tool counts as a change.
local n = tonumber(ARGV[3])
if redis.call('HLEN', KEYS[1]) ~= n then return 'changed' end
for i = 4, 3 + 2 * n, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) ~= ARGV[i + 1] then return 'changed' end
end
if ARGV[1] == 'delete' then redis.call('DEL', KEYS[1]); return 'done' end
for i = 4 + 2 * n, #ARGV, 1000 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 'done'
