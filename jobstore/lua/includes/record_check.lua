-- Whether a record reads back as a job: jobstore.job.record_problem, the same rules in Lua (the
-- differential test is tests/store/test_corrupt_records.py). Included by the scripts that write to a
-- record they did not create, so that nothing is written to a record no reader could decode.
local JOB_STATUSES = {{ JOB_STATUSES }}
--- @include "text"
--- @include "time"
local function is_time(v) return to_epoch(v) ~= nil end
-- returns field, reason of the first problem of the record at key, or nil
local function record_problem(key)
  local f = redis.call('HMGET', key, 'job_id', 'workspace_id', 'status', 'created_at', 'updated_at')
  if not f[1] or f[1] == '' then return 'job_id', 'missing' end
  if not f[2] or f[2] == '' then return 'workspace_id', 'missing' end
  if f[3] and f[3] ~= '' and not JOB_STATUSES[f[3]] then return 'status', 'not a job status' end
  if not f[4] or f[4] == '' then return 'created_at', 'missing' end
  if not is_time(f[4]) then return 'created_at', {{ NOT_A_TIME }} end
  if f[5] and f[5] ~= '' and not is_time(f[5]) then
    return 'updated_at', {{ NOT_A_TIME }}
  end
  -- Bytes that are not UTF-8: only in a record other code created (no '_op', the field of the
  -- enqueue that created it). jobstore writes only UTF-8 (every text is checked in Python before
  -- it is sent), so its own records skip a check that costs ~15 ns per byte of params and result.
  if redis.call('HEXISTS', key, '_op') == 0 then
    local text = redis.call('HMGET', key, unpack(TEXT_FIELDS))
    for i = 1, #TEXT_FIELDS do
      if text[i] and not utf8_text(text[i]) then return TEXT_FIELDS[i], NOT_UTF8 end
    end
  end
  return nil
end
-- A record of the workspace, or one without a workspace_id: a record without one is taken for
-- the workspace whose key led to it (and is corrupt), never silently for no one's.
local function addressed(key, workspace_id)
  local owner = redis.call('HGET', key, 'workspace_id')
  if owner then return owner == workspace_id or owner == '' end
  return redis.call('EXISTS', key) == 1
end
