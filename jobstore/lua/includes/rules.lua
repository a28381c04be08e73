-- jobstore.rules in Lua (see its docstring): which copy of a job is newer, what a copy, merge or
-- cleanup does. Included by the standalone scripts that see both copies; Redis Cluster decides in
-- Python. The differential test is tests/ops/test_rules.py. Records are Lua tables.
--- @include "count"
--- @include "status"
--- @include "hash"
local REV = {{ REV }}
local MUTABLE = {{ MUTABLE }}
local function rev(record) return stored_count(record[REV]) end
local function newer(a, b) return rev(a) > rev(b) end
local function later_status(a, b)
  return (RANK[a['status'] or ''] or -1) > (RANK[b['status'] or ''] or -1)
end
local function wins(a, b, a_is_authority)
  if rev(a) ~= rev(b) then return rev(a) > rev(b) end
  if later_status(a, b) or later_status(b, a) then return later_status(a, b) end
  return a_is_authority
end
-- two copies' PTTL replies: whether they expire apart (jobstore.rules.expire_apart)
local function expire_apart(x, y)
  if x == -2 or y == -2 or (x == -1 and y == -1) then return false end
  return x == -1 or y == -1 or math.abs(x - y) > {{ EXPIRY_GRACE_MS }}
end
local function same_content(a, b)
  for k, v in pairs(a) do if k ~= REV and b[k] ~= v then return false end end
  for k, v in pairs(b) do if k ~= REV and a[k] ~= v then return false end end
  return true
end
local function same_identity(a, b)
  for k, v in pairs(a) do if not MUTABLE[k] and b[k] ~= v then return false end end
  for k, v in pairs(b) do if not MUTABLE[k] and a[k] ~= v then return false end end
  return true
end
-- verify's finding for a source record and its target copy, both present and the workspace's
local function compared(source, target)
  if same_content(source, target) then return 'same' end
  if same_identity(source, target) and newer(target, source) then return 'target_newer' end
  return 'differing'
end
local function union(winner, loser)
  local out = {}
  for k, v in pairs(loser) do out[k] = v end
  for k, v in pairs(winner) do out[k] = v end
  return out
end
local function is_empty(t) return next(t) == nil end
-- returns outcome, new 'from' record or nil, new 'to' record or nil
local function decide_sync(mode, source, target, prefer_to)
  if is_empty(source) and is_empty(target) then return 'gone', nil, nil end
  if is_empty(target) then return 'copied', nil, source end
  if mode == 'copy' then
    if is_empty(source) then return 'gone', nil, nil end
    if not same_content(source, target) and wins(source, target, not prefer_to) then
      return 'refreshed', nil, union(source, target)
    end
    return 'exists', nil, nil
  end
  if is_empty(source) then return 'copied-back', target, nil end
  if same_content(source, target) then return 'same', nil, nil end
  local winner, loser = source, target
  if wins(target, source, prefer_to) then winner, loser = target, source end
  local merged = union(winner, loser)
  return 'merged', merged, merged
end
local function same_record(source, target)
  local moved_on = rev(target) >= rev(source)
  for k, v in pairs(source) do
    if k ~= REV and target[k] ~= v and not (moved_on and MUTABLE[k]) then return false end
  end
  return true
end
-- HSET in slices: unpack() of more than a few thousand values fails ('too many results').
local function hset_flat(key, flat)
  for i = 1, #flat, 1000 do
    redis.call('HSET', key, unpack(flat, i, math.min(i + 999, #flat)))
  end
end
local function hset_record(key, record)
  hset_flat(key, flat_of(record))
end
