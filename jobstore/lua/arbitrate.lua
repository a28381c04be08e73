-- Redis Cluster: who claims a job whose queue entry might be duplicated. The arbiter names the
-- winning claim and when it won: a claim that won long ago and never moved the job (its dequeue
-- died in between) can be replaced, so that the job is not stranded.
-- KEYS[1] the job's arbiter   ARGV[1] this call's claim   ARGV[2] ttl (s)
-- ARGV[3] the holder to replace ('' none: only an absent arbiter is taken)
-- returns {'won'} | {'held', holder, how long ago it won (ms)}
--- @include "lease"
local now = now_ms()
local held = redis.call('GET', KEYS[1])
if held then
  local holder, at = string.match(held, '^(.*)|(%d+)$')
  holder = holder or held
  if holder == ARGV[1] then return {'won'} end
  if ARGV[3] == '' or holder ~= ARGV[3] then
    return {'held', holder, tostring(now - (tonumber(at) or 0))}
  end
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. now, 'EX', ARGV[2])
return {'won'}
