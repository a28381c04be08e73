-- KEYS[1] 'from' record   KEYS[2] 'to' record   KEYS[3] workspace index
-- ARGV[1] workspace id   ARGV[2] job id   ARGV[3] mode 'copy' | 'merge'   ARGV[4] '1' dry run
-- ARGV[5] '1' when 'to' wins a conflict (equal write counts): the copy the phase reads first
-- returns 'copied' | 'refreshed' | 'copied-back' | 'merged' | 'same' | 'exists' | 'gone'
--         | 'foreign' | 'not_a_record' (a key that is not a hash: nothing done)
-- The decision is jobstore.rules' decide_sync (see there): which copy is newer is decided by
-- the records' write counts, never by a client's clock. A record deleted meanwhile is never
-- revived (both copies are read here, at one instant). Only records owned by the workspace
-- are touched. A written copy takes the remaining time of the record it was written from, when
-- that one expires (a finished job's retention, docs/retention.md): copied, not reset.
--- @include "rules"
--- @include "time"
for i = 1, 2 do
  local kind = redis.call('TYPE', KEYS[i]).ok
  if kind ~= 'hash' and kind ~= 'none' then return 'not_a_record' end
end
local from, to = load(KEYS[1]), load(KEYS[2])
if (not is_empty(from) and from['workspace_id'] ~= ARGV[1])
    or (not is_empty(to) and to['workspace_id'] ~= ARGV[1]) then
  return 'foreign'
end
local outcome, new_from, new_to = decide_sync(ARGV[3], from, to, ARGV[5] == '1')
if ARGV[4] == '1' then return outcome end
local function write(key, record, ttl_of)
  hset_record(key, record)
  if ttl_of then
    local ttl = redis.call('PTTL', ttl_of)
    if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
  end
  redis.call('ZADD', KEYS[3], 'NX', to_epoch(record['created_at']) or 0, ARGV[2])
end
if new_from then write(KEYS[1], new_from, KEYS[2]) end
if new_to then write(KEYS[2], new_to, KEYS[1]) end
return outcome
