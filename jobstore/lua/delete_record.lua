-- KEYS[1] op marker   KEYS[2] record   KEYS[3] the record's tombstone
-- ARGV[1] workspace id   ARGV[2] marker ttl (s)   ARGV[3] tombstone ttl (s)
-- ARGV[4 ..] stamps (created_at) of the job's records the delete found, in any slot
-- returns 1 deleted (now or by this call's earlier attempt) | 0 not there
-- Leaves a tombstone unless the key holds another workspace's record, so that no copy or repair
-- running beside the delete can bring the record back. The tombstone names what was deleted,
-- 'workspace:created_at' per deleted incarnation of the id, never a time: a job enqueued again
-- under the same id later is another incarnation and is not stopped, whatever any clock says.
if redis.call('EXISTS', KEYS[1]) == 1 then return 1 end
local owner = redis.call('HGET', KEYS[2], 'workspace_id')
if owner and owner ~= ARGV[1] then return 0 end
local stamps = {}
for i = 4, #ARGV do stamps[#stamps + 1] = ARGV[1] .. ':' .. ARGV[i]; stamps[#stamps + 1] = '1' end
if owner then
  stamps[#stamps + 1] = ARGV[1] .. ':' .. (redis.call('HGET', KEYS[2], 'created_at') or '')
  stamps[#stamps + 1] = '1'
end
if #stamps > 0 then
  redis.call('HSET', KEYS[3], unpack(stamps))
  redis.call('EXPIRE', KEYS[3], ARGV[3])
end
if not owner then return 0 end
redis.call('DEL', KEYS[2])
redis.call('SET', KEYS[1], '1', 'EX', ARGV[2])
return 1
