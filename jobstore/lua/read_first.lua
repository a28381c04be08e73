-- flags: read-only
-- KEYS[1 ..] a job's record keys, in read order   ARGV[1] the workspace id
-- returns {position, record} of the first record that belongs to the workspace or has no
-- workspace_id (jobstore.ops.addressed: the store reports that one corrupt), else {0}.
-- Standalone get of a job the routing reads from two schemas: one command, and only the record
-- that answers comes back. A key of another type is an error, as HGETALL's own.
for i = 1, #KEYS do
  local record = redis.call('HGETALL', KEYS[i])
  if #record > 0 then
    local owner = ''
    for j = 1, #record, 2 do
      if record[j] == 'workspace_id' then owner = record[j + 1]; break end
    end
    if owner == ARGV[1] or owner == '' then return {i, record} end
  end
end
return {0}
