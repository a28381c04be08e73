-- Fenced (includes/fence.lua): the call's KEYS[1], ARGV[1] and ARGV[2] are the fence's,
-- dropped before the lines below run; the indices below are those left.
-- KEYS[1] leases   KEYS[2 ..] the job's record keys, in read order (none: Redis Cluster, where
--   the caller read them first, and they sit in other slots)
-- ARGV[1] claim   ARGV[2] lease (ms, from now)   ARGV[3] workspace id
-- returns the new expiry (ms, server time) | 0 the claim has ended (taken over, finished, failed,
--   cancelled, deleted, or the id enqueued again: a record that is not running under this claim)
-- A lease that ran out but whose job no one has taken over yet is renewed: the claim stands
-- until another dequeue takes the job. The lease of a claim that has ended is dropped.
--- @include "fence"
--- @include "record_check"
--- @include "lease"
local held = #KEYS == 1
for i = 2, #KEYS do
  if addressed(KEYS[i], ARGV[3]) then  -- the first copy in read order decides, as for updates
    held = redis.call('HGET', KEYS[i], 'claim') == ARGV[1]
           and redis.call('HGET', KEYS[i], 'status') == 'running'
    break
  end
end
if not held then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
local until_ms = now_ms() + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], 'XX', until_ms, ARGV[1])
return until_ms
