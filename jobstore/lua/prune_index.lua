-- KEYS[1] a workspace index (sorted set)
-- ARGV[1 ..] job id, score pairs: index entries whose records were found gone (expired or
--            deleted), each with the score it had when read
-- returns how many entries were removed
-- An entry goes only while it still has the score it was read with: a job enqueued again under
-- the same id since (a new record, a new created_at) keeps its entry. Safe to re-send.
local removed = 0
for i = 1, #ARGV, 2 do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) == tonumber(ARGV[i + 1]) then
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return removed
