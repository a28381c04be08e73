-- KEYS[1] the sweep's cursor (a hash): field 'cycle', and per primary (its name) where the sweep
--         of this cycle stopped there ('done' once it reached the end of that primary's keys)
-- ARGV[1] 'start': ARGV[2 ..] the names of the current primaries. Fields of other names go (a
--         primary replaced: its cursor means nothing to another server); when every listed one
--         is done, a new cycle begins (their fields cleared, cycle + 1).
--         returns {cycle, name, where, name, where, ...}
-- ARGV[1] 'mark': ARGV[2] the cycle   ARGV[3] a primary's name   ARGV[4] where the sweep stopped
--         there: written only while the cycle is still ARGV[2] (a sweep running beside another
--         never marks the next cycle with the last one's progress). returns 1 written | 0 not
-- (docs/retention.md: a bounded sweep resumes where the last one stopped)
if ARGV[1] == 'mark' then
  if (redis.call('HGET', KEYS[1], 'cycle') or '0') ~= ARGV[2] then return 0 end
  redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
  return 1
end
local listed, all_done = {}, true
for i = 2, #ARGV do
  listed[ARGV[i]] = true
  if redis.call('HGET', KEYS[1], ARGV[i]) ~= 'done' then all_done = false end
end
local stored = redis.call('HGETALL', KEYS[1])
for i = 1, #stored, 2 do
  if stored[i] ~= 'cycle' and (all_done or not listed[stored[i]]) then
    redis.call('HDEL', KEYS[1], stored[i])
  end
end
if all_done then redis.call('HINCRBY', KEYS[1], 'cycle', 1) end
local reply = {redis.call('HGET', KEYS[1], 'cycle') or '0'}
local left = redis.call('HGETALL', KEYS[1])
for i = 1, #left, 2 do
  if left[i] ~= 'cycle' then reply[#reply + 1] = left[i]; reply[#reply + 1] = left[i + 1] end
end
return reply
