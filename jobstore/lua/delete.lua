-- Fenced (includes/fence.lua): the call's KEYS[1], ARGV[1] and ARGV[2] are the fence's,
-- dropped before the lines below run; the indices below are those left.
-- KEYS[1] the job's tombstone (a hash of call tokens: jobstore.layout.StoreKeys.gone)
-- KEYS[2] workspace index   KEYS[3] leases   KEYS[4 ..] record keys
-- ARGV[1] workspace id   ARGV[2] marker ttl (s)   ARGV[3] job id   ARGV[4] this call's token
-- returns 1 deleted (by this call, or by its own earlier attempt) | 0 nothing to delete
-- The tombstone keeps, for the marker ttl, this call's token and the '_op' token of each record
-- it deleted: a re-sent delete answers 1, and a re-sent enqueue of a job that was run and
-- deleted before the enqueue's reply came back does not bring the job back (see ENQUEUE).
-- The claim a deleted record held ends with it: its lease is dropped (extend: LeaseLost).
--- @include "fence"
if redis.call('HEXISTS', KEYS[1], ARGV[4]) == 1 then return 1 end
local gone = {ARGV[4], '1'}
for i = 4, #KEYS do
  if redis.call('HGET', KEYS[i], 'workspace_id') == ARGV[1] then
    local made = redis.call('HGET', KEYS[i], '_op')
    if made then gone[#gone + 1] = made; gone[#gone + 1] = '1' end
    local claim = redis.call('HGET', KEYS[i], 'claim')
    if claim and claim ~= '' then redis.call('ZREM', KEYS[3], claim) end
    redis.call('DEL', KEYS[i])
    gone.deleted = true
  end
end
if not gone.deleted then return 0 end
redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('HSET', KEYS[1], unpack(gone))
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
