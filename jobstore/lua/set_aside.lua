-- Unroutable source records (no usable workspace_id) set aside by ``jobstore migrate set-aside``:
-- renamed, in their own slot, to a key outside every schema's namespace, bytes and TTL intact.
-- KEYS[1] the source record   KEYS[2] where it goes (StoreKeys.aside: the same slot)
-- ARGV[1] '1' the record names its workspace (the key does not): set aside only while that is
--         missing or unusable; '0' the key's own workspace id is unusable
-- ARGV[2] '1' dry run
-- returns 'set-aside' (also for a re-sent call: the record is where this call put it)
--       | 'gone' deleted meanwhile | 'routable' it names a usable workspace now: left
--       | 'not_a_record' another type: left | 'busy' KEYS[2] holds another record: left
if redis.call('EXISTS', KEYS[2]) == 1 then
  if redis.call('EXISTS', KEYS[1]) == 0 then return 'set-aside' end
  return 'busy'
end
local kind = redis.call('TYPE', KEYS[1]).ok
if kind == 'none' then return 'gone' end
if kind ~= 'hash' then return 'not_a_record' end
--- @include "ids"
if ARGV[1] == '1' and is_id(redis.call('HGET', KEYS[1], 'workspace_id')) then
  return 'routable'
end
if ARGV[2] ~= '1' then redis.call('RENAME', KEYS[1], KEYS[2]) end
return 'set-aside'
