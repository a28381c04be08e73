-- KEYS[1] op marker   KEYS[2] record (a copy that follows the one that took a move)
-- ARGV[1] workspace id   ARGV[2] marker ttl (s)   ARGV[3] when the copy expires (server time in
-- ms: the first copy's expiry of a final move, docs/retention.md; '' or 0: none)
-- ARGV[4 ..] field, value pairs, status among them
-- returns 'done' | 'missing' | 'newer' (the copy already took this move or a later one: left alone)
-- Writes reach the copies one after another, so a late one must not undo a later one. Every
-- allowed move raises the status (pending < running < terminal), or, for a running job handed
-- out again, its attempt count: a copy already as far along took a later move
-- (jobstore.rules.moved_past). No clock is consulted.
if redis.call('EXISTS', KEYS[1]) == 1 then return 'done' end
if redis.call('HGET', KEYS[2], 'workspace_id') ~= ARGV[1] then return 'missing' end
--- @include "count"
--- @include "status"
local fields, status, attempts = {}, nil, nil
for i = 4, #ARGV, 2 do
  fields[#fields + 1] = ARGV[i]; fields[#fields + 1] = ARGV[i + 1]
  if ARGV[i] == 'status' then status = ARGV[i + 1] end
  if ARGV[i] == 'attempts' then attempts = stored_count(ARGV[i + 1]) end
end
-- a later hand-out of a running job (a lease taken over) is a move too: its attempt is higher
-- (every mirror carries the first copy's claim and attempts as they are after its move, so a
-- later move's mirror has brought them already)
if moved_past(redis.call('HGET', KEYS[2], 'status'), status,
              stored_count(redis.call('HGET', KEYS[2], 'attempts')), attempts) then
  return 'newer'
end
redis.call('HSET', KEYS[2], '_rev', bump(KEYS[2]), unpack(fields))
if (tonumber(ARGV[3]) or 0) > 0 then redis.call('PEXPIREAT', KEYS[2], ARGV[3]) end
redis.call('SET', KEYS[1], '1', 'EX', ARGV[2])
return 'done'
