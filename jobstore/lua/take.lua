-- Redis Cluster: the move from the queue to the claim list, registered as above, in one step.
-- KEYS[1] queue   KEYS[2] claim list   KEYS[3] leases
-- ARGV[1] how long the claim list may stay (ms)   ARGV[2] most expired leases to look at
-- returns {entry moved or false (the queue is empty), then each expired claim
--          ('<token>:<entry>', oldest first) and how long ago its lease ran out (ms)}
-- One step for a dequeue: the leases that ran out (claim lists of dequeues that died go back to
-- the queue here; the jobs of expired claims sit in other slots, the caller takes them over),
-- and the oldest entry into this call's claim list, leased like any claim list.
--- @include "lease"
local now = now_ms()
local out = {false}
local expired = expired_leases(KEYS[3], now, tonumber(ARGV[2] or '0'))
for _, member in ipairs(expired) do
  if string.sub(member, 1, 5) == 'list:' then
    return_list(string.sub(member, 6), KEYS[1])
    redis.call('ZREM', KEYS[3], member)
  else
    out[#out + 1] = member
    out[#out + 1] = tostring(now - tonumber(redis.call('ZSCORE', KEYS[3], member)))
  end
end
local entry = redis.call('RPOP', KEYS[1])
if entry then
  redis.call('LPUSH', KEYS[2], entry)
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[1]), list_lease(KEYS[2]))
  out[1] = entry
end
return out
