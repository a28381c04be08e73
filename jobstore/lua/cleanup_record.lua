-- KEYS[1] source record   KEYS[2] target record
-- ARGV[1] workspace id   ARGV[2] '1' dry run
-- returns 'deleted' | 'kept' (no target copy, or not the same record) | 'gone' | 'foreign'
--         | 'not_a_record'
-- The same record: jobstore.rules' same_record (the target holds every source field with the
-- same value, except the mutable ones when the target's write count is at least the source's).
--- @include "rules"
for i = 1, 2 do
  local kind = redis.call('TYPE', KEYS[i]).ok
  if kind ~= 'hash' and kind ~= 'none' then return 'not_a_record' end
end
local s = load(KEYS[1])
if is_empty(s) then return 'gone' end
if s['workspace_id'] ~= ARGV[1] then return 'foreign' end
local t = load(KEYS[2])
if is_empty(t) or t['workspace_id'] ~= ARGV[1] or not same_record(s, t) then return 'kept' end
if ARGV[2] ~= '1' then redis.call('DEL', KEYS[1]) end
return 'deleted'
