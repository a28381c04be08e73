-- Whether a record reads back as a job: jobstore.job.record_problem, the same rules in Lua (the
-- differential test is tests/store/test_corrupt_records.py). Included by the scripts that write to a
-- record they did not create, so that nothing is written to a record no reader could decode.
local JOB_STATUSES = {{ JOB_STATUSES }}
--- @include "text"
--- @include "time"
--- @include "hash"
local function is_time(v) return to_epoch(v) ~= nil end
local CHECKED = {'job_id', 'workspace_id', 'status', 'created_at', 'updated_at', '_op'}
-- returns field, reason of the first problem of record r (a table holding at least the CHECKED
-- fields, or the whole record when key is nil; else its text fields are read from key), or nil
local function problem_in(r, key)
  local f = r
  if not f.job_id or f.job_id == '' then return 'job_id', 'missing' end
  if not f.workspace_id or f.workspace_id == '' then return 'workspace_id', 'missing' end
  if f.status and f.status ~= '' and not JOB_STATUSES[f.status] then
    return 'status', 'not a job status'
  end
  if not f.created_at or f.created_at == '' then return 'created_at', 'missing' end
  if not is_time(f.created_at) then return 'created_at', {{ NOT_A_TIME }} end
  if f.updated_at and f.updated_at ~= '' and not is_time(f.updated_at) then
    return 'updated_at', {{ NOT_A_TIME }}
  end
  -- Bytes that are not UTF-8: only in a record other code created (no '_op', the field of the
  -- enqueue that created it). jobstore writes only UTF-8 (every text is checked in Python before
  -- it is sent), so its own records skip a check that costs ~15 ns per byte of params and result.
  if not f._op then
    local text = key and redis.call('HMGET', key, unpack(TEXT_FIELDS)) or {}
    for i = 1, #TEXT_FIELDS do
      local v = text[i] or r[TEXT_FIELDS[i]]
      if v and not utf8_text(v) then return TEXT_FIELDS[i], NOT_UTF8 end
    end
  end
  return nil
end
-- returns field, reason of the first problem of the record at key, or nil
local function record_problem(key)
  local f, r = redis.call('HMGET', key, unpack(CHECKED)), {}
  for i = 1, #CHECKED do r[CHECKED[i]] = f[i] or nil end
  return problem_in(r, key)
end
-- A record of the workspace, or one without a workspace_id: a record without one is taken for
-- the workspace whose key led to it (and is corrupt), never silently for no one's. addressed_in:
-- the same of a record read whole (load: empty when the key does not exist).
local function addressed_in(r, workspace_id)
  local owner = r.workspace_id
  if owner then return owner == workspace_id or owner == '' end
  return next(r) ~= nil
end
local function addressed(key, workspace_id)
  local owner = redis.call('HGET', key, 'workspace_id')
  if owner then return owner == workspace_id or owner == '' end
  return redis.call('EXISTS', key) == 1
end
