-- KEYS[1] record   KEYS[2] the record's tombstone (DELETE_RECORD)
-- ARGV[1] this call's token (the record's '_op' field too, among the pairs)
-- ARGV[2] the incarnation, 'workspace:created_at'   ARGV[3 ..] field, value pairs
-- returns {'created'} | {'replayed'} | {'exists', record}
-- No marker key: the record names the call that created it, and a delete names the incarnations
-- it deleted in the tombstone (a new incarnation is never among them), so a re-sent call
-- recognises its first attempt even when the job was deleted in between.
if redis.pcall('HGET', KEYS[1], '_op') == ARGV[1] or redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then
  return {'replayed'}
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists', redis.call('HGETALL', KEYS[1])} end
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
return {'created'}
