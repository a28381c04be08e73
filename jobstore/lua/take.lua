-- Redis Cluster: the move from the queue to the claim list, registered as above, in one step.
-- KEYS[1] queue   KEYS[2] claim list   KEYS[3] leases
-- KEYS[4] this call's op marker (optional): written by TOOK once the call has claimed a job
-- ARGV[1] how long the claim list may stay (ms)   ARGV[2] most expired leases to look at
-- returns {entry to claim or false (the queue is empty), the entry this call claimed already or
--          false, then each expired claim ('<token>:<entry>', oldest first) and how long ago its
--          lease ran out (ms)}
-- One step for a dequeue: the leases that ran out (claim lists of dequeues that died go back to
-- the queue here; the jobs of expired claims sit in other slots, the caller takes them over),
-- and the oldest entry into this call's claim list, leased like any claim list.
-- A re-send is told apart from a first attempt: when the call's marker names the entry it claimed
-- (the whole call re-sent after its claim), that entry comes back and nothing else is done but
-- the call's last step (its claim list back to the queue, as RETURN_CLAIMS); when
-- the claim list already holds an entry (this step re-sent: its first attempt took it), that entry
-- is the one to claim, and no second one is taken from the queue.
--- @include "lease"
if KEYS[4] then
  local claimed = redis.call('GET', KEYS[4])
  if claimed then  -- and what the call left to do after its claim: its claim list goes back
    return_list(KEYS[2], KEYS[1])
    redis.call('ZREM', KEYS[3], list_lease(KEYS[2]))
    return {false, claimed}
  end
end
local now = now_ms()
local out = {false, false}
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
local entry = redis.call('LINDEX', KEYS[2], -1)
if not entry then
  entry = redis.call('RPOP', KEYS[1])
  if entry then redis.call('LPUSH', KEYS[2], entry) end
end
if entry then
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[1]), list_lease(KEYS[2]))
  out[1] = entry
end
return out
