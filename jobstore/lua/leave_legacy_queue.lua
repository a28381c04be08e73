-- Leaving the compatible queue: its pending ids move into jobstore's own queue, as full entries.
-- KEYS[1] the compatible queue   KEYS[2] jobstore's queue   KEYS[3] queue mode hash
-- ARGV[1] most ids to move   ARGV[2 ..] record key templates of the schemas keyed by the job id
--         alone (byte 2 stands for the job id)
-- returns {moved, dropped (no record: a deleted job), left in the compatible queue}
-- Sets the mode to 'left' first: from then on every enqueue pushes to jobstore's queue, and every
-- dequeue still drains what remains here. Newest first onto the queue's oldest end, so that the
-- order is kept and the moved ids come out before any job enqueued since. Each call is atomic:
-- an id is moved once, and a run cut off anywhere is finished by running it again.
redis.call('HSET', KEYS[3], 'mode', 'left')
local moved, dropped = 0, 0
for _ = 1, tonumber(ARGV[1]) do
  local id = redis.call('RPOP', KEYS[1])
  if not id then break end
  local entry = nil
  for i = 2, #ARGV do
    local record = redis.call('HMGET', (string.gsub(ARGV[i], '\2', id)), 'workspace_id', 'created_at')
    if record[1] and record[1] ~= '' then
      entry = record[1] .. ':' .. id .. ':' .. (record[2] or '')
      break
    end
  end
  if entry and not string.find(id, ':', 1, true) then
    redis.call('RPUSH', KEYS[2], entry)
    moved = moved + 1
  elseif string.find(id, ':', 1, true) then
    redis.call('RPUSH', KEYS[2], id)  -- already a jobstore entry
    moved = moved + 1
  else
    dropped = dropped + 1
  end
end
return {moved, dropped, redis.call('LLEN', KEYS[1])}
