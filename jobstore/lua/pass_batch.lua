-- The passes on standalone Redis, for schemas with a key format: one call settles a chunk of
-- scanned keys, placement included (the other copy's key and the index key are the schemas'
-- templates with the ids substituted, as DEQUEUE does), each record read once and nothing
-- re-read after it is written. Per record it decides exactly as SYNC_RECORD, CLEANUP_RECORD
-- and verify's comparison do (jobstore.rules), at one instant per record. A key of another type
-- is found by the read itself (redis.pcall), and a write Redis refuses is that record's 'error':
-- the chunk goes on with the next record. Computed schemas and Redis Cluster keep the per-record
-- forms (jobstore.migration.settle).
-- KEYS[1 ..] scanned record keys (the 'from' side of a copy or merge, the source of a cleanup,
--            the side verify scans)
-- ARGV[1] mode: 'copy' | 'merge' | 'cleanup' | 'source' | 'target' (verify, by side scanned)
-- ARGV[2] '1' dry run   ARGV[3] who wins a conflict of equal write counts and statuses: '1' the
--         'to' copy, '0' the 'from' copy, '?' it depends on the workspace (the caller decides)
-- ARGV[4] the other schema's key template: \1 stands for the workspace id, \2 for the job id
-- ARGV[5] the index key template (\1 the workspace id)
-- ARGV[6] the scanned schema's key template, the ids are read off each key (the same ids its
--         parse_key gives, or none: not a key of the schema); '' (a computed schema): they
--         follow, ARGV[5 + 2i] the workspace id of KEYS[i] ('' when its key does not hold it:
--         read from the record), ARGV[6 + 2i] its job id
-- returns one entry per key:
--   '' not a key of the scanned schema: nothing done, nothing counted
--   '-' nothing to do: deleted since the scan (a key without the workspace), or verify found it
--   gone or another workspace's; '-unroutable', '-not_a_record': counted, not placed
--   copy, merge: an outcome of SYNC_RECORD, 'error', or {'?', workspace, job id} (the caller
--   decides who wins)
--   cleanup: an outcome of CLEANUP_RECORD, or 'error'
--   verify: 'same' | 'not_a_record' | {kind, workspace, job id, record, counterpart} for any
--   other kind ('missing', 'differing', 'target_newer', 'orphaned', 'expiry': the same record
--   whose copies expire apart), records as flat lists
--- @include "rules"
--- @include "time"
--- @include "ids"
local mode, dry, authority = ARGV[1], ARGV[2] == '1', ARGV[3]
-- f(workspace, job): a template with the ids put in (each mark at most once; no pattern work)
local function compile(template)
  local w, j = string.find(template, '\1', 1, true), string.find(template, '\2', 1, true)
  if not w or not j then
    local at = w or j
    local head, tail = string.sub(template, 1, at - 1), string.sub(template, at + 1)
    if w then return function(ws, job) return head .. ws .. tail end end
    return function(ws, job) return head .. job .. tail end
  end
  local a = string.sub(template, 1, math.min(w, j) - 1)
  local b = string.sub(template, math.min(w, j) + 1, math.max(w, j) - 1)
  local c = string.sub(template, math.max(w, j) + 1)
  if w < j then return function(ws, job) return a .. ws .. b .. job .. c end end
  return function(ws, job) return a .. job .. b .. ws .. c end
end
local other_key_of, index_of = compile(ARGV[4]), compile(ARGV[5])
local NOT_A_HASH = {'\0not-a-hash', 'another type'}
-- f(key): workspace id ('' when the key does not hold it), job id; nil for another key.
-- KeySchema.parse_key for a key format: the ids are what the marks stand for, of the id
-- alphabet; two marks are split by text holding a character no id can (KeySchema._check).
local function parser(template)
  local w, j = string.find(template, '\1', 1, true), string.find(template, '\2', 1, true)
  local first, last = math.min(w or j, j), math.max(w or j, j)
  local head, tail = string.sub(template, 1, first - 1), string.sub(template, last + 1)
  local sep = w and string.sub(template, first + 1, last - 1)
  return function(key)
    if #key <= #head + #tail or string.sub(key, 1, #head) ~= head
        or string.sub(key, #key - #tail + 1) ~= tail then
      return nil
    end
    local middle = string.sub(key, #head + 1, #key - #tail)
    if not sep then
      if is_id(middle) then return '', middle end
      return nil
    end
    local at = string.find(middle, sep, 1, true)
    if not at then return nil end
    local a, b = string.sub(middle, 1, at - 1), string.sub(middle, at + #sep)
    if not is_id(a) or not is_id(b) then return nil end
    if w < j then return a, b end
    return b, a
  end
end
local function failed(reply) return type(reply) == 'table' and reply['err'] ~= nil end
-- a copy that expires within the grace counts as gone already: its counterpart may have
-- expired a moment before it (docs/retention.md)
local function expiring(key)
  local ttl = redis.pcall('PTTL', key)
  return not failed(ttl) and ttl >= 0 and ttl <= {{ EXPIRY_GRACE_MS }}
end
-- copies of a finished job that are the same but expire apart: one lasts while the other
-- expires, or both expire more than the grace apart (a real difference: verify reports it,
-- docs/retention.md); pending and running jobs never expire, and are not compared so
local FINAL = {{ TERMINAL }}
local function final_expire_apart(record, a, b)
  if not FINAL[record['status'] or ''] then return false end
  local x, y = redis.pcall('PTTL', a), redis.pcall('PTTL', b)
  if failed(x) or failed(y) then return false end
  return expire_apart(x, y)
end
-- a record and its flat form; nil for a key of another type
local function read(key)
  local flat = redis.pcall('HGETALL', key)
  if flat['err'] then return nil, nil end
  local record = {}
  for i = 1, #flat, 2 do record[flat[i]] = flat[i + 1] end
  return record, flat
end
-- rules.wins reaches the authority: equal write counts and statuses, different content
local function needs_authority(from, to)
  return not is_empty(from) and not is_empty(to) and not same_content(from, to)
    and rev(from) == rev(to) and not later_status(from, to) and not later_status(to, from)
end
local function hset_flat_checked(key, flat)
  for i = 1, #flat, 1000 do
    if failed(redis.pcall('HSET', key, unpack(flat, i, math.min(i + 999, #flat)))) then return false end
  end
  return true
end
-- index entries to add, by workspace: {score, job id, ...}, and the keys they are for: one
-- ZADD NX per workspace at the end of the call (a refused one is an 'error' of its records)
local entries, entry_of = {}, {}
-- writes a record as SYNC_RECORD does (flat: the record as field, value pairs, when known);
-- false when Redis refused a write
local function write(i, key, record, flat, ttl_of, ws, job)
  if not flat then
    flat = {}
    for k, v in pairs(record) do flat[#flat + 1] = k; flat[#flat + 1] = v end
  end
  if not hset_flat_checked(key, flat) then return false end
  -- the remaining time of the copy it was written from, when that one expires (retention)
  local ttl = redis.pcall('PTTL', ttl_of)
  if not failed(ttl) and ttl > 0 and failed(redis.pcall('PEXPIRE', key, ttl)) then return false end
  local mine = entries[ws]
  if not mine then mine = {}; entries[ws] = mine; entry_of[ws] = {} end
  mine[#mine + 1] = to_epoch(record['created_at']) or 0
  mine[#mine + 1] = job
  entry_of[ws][#entry_of[ws] + 1] = i
  return true
end

-- verify of the target side: only the owner of each copy is read, unless they differ
local function orphan_check(key, ws, job)
  local owner = redis.pcall('HGET', key, 'workspace_id')
  if failed(owner) then return 'not_a_record' end
  if ws == '' then
    if not owner and redis.call('EXISTS', key) == 0 then return '-' end
    if not is_id(owner) then return '-unroutable' end
    ws = owner
  elseif owner ~= ws then
    return '-'
  end
  local other_key = other_key_of(ws, job)
  if redis.pcall('HGET', other_key, 'workspace_id') == ws or expiring(key) then return 'same' end
  local _, mine_flat = read(key)
  local _, theirs_flat = read(other_key)
  return {'orphaned', ws, job, mine_flat or NOT_A_HASH, theirs_flat or NOT_A_HASH}
end

local function settle(i, key, ws, job)
  if mode == 'target' then return orphan_check(key, ws, job) end
  local mine, mine_flat = read(key)
  local scoped = ws ~= ''
  if mine == nil then
    if scoped or mode == 'source' then return 'not_a_record' end
    return '-not_a_record'
  end
  if not scoped then
    if is_empty(mine) then return '-' end
    ws = mine['workspace_id']
    if not is_id(ws) then return '-unroutable' end
  end
  local other_key = other_key_of(ws, job)
  if mode == 'source' then
    if mine['workspace_id'] ~= ws then return '-' end
    local theirs, theirs_flat = read(other_key)
    local kind = 'missing'
    if theirs ~= nil and theirs['workspace_id'] == ws then
      kind = compared(mine, theirs)
      if kind == 'same' then
        if not final_expire_apart(mine, key, other_key) then return 'same' end
        kind = 'expiry'
      end
    elseif theirs ~= nil and expiring(key) then
      return 'same'
    end
    return {kind, ws, job, mine_flat, theirs_flat or NOT_A_HASH}
  end
  local theirs = read(other_key)
  if theirs == nil then return 'not_a_record' end
  if mode == 'cleanup' then
    if is_empty(mine) then return 'gone' end
    if mine['workspace_id'] ~= ws then return 'foreign' end
    if is_empty(theirs) or theirs['workspace_id'] ~= ws or not same_record(mine, theirs) then
      return 'kept'
    end
    if not dry and failed(redis.pcall('UNLINK', key)) then return 'error' end
    return 'deleted'
  end
  if (not is_empty(mine) and mine['workspace_id'] ~= ws)
      or (not is_empty(theirs) and theirs['workspace_id'] ~= ws) then
    return 'foreign'
  end
  if authority == '?' and needs_authority(mine, theirs) then return {'?', ws, job} end
  local outcome, new_from, new_to = decide_sync(mode, mine, theirs, authority == '1')
  if dry then return outcome end
  if new_from and not write(i, key, new_from, nil, other_key, ws, job) then
    return 'error'
  end
  -- a plain copy writes the record as it was read
  if new_to and not write(i, other_key, new_to, new_to == mine and mine_flat or nil, key, ws, job) then
    return 'error'
  end
  return outcome
end

local out = {}
local parse = ARGV[6] ~= '' and parser(ARGV[6])
for i = 1, #KEYS do
  local ws, job
  if parse then ws, job = parse(KEYS[i]) else ws, job = ARGV[5 + 2 * i], ARGV[6 + 2 * i] end
  out[i] = job and settle(i, KEYS[i], ws, job) or ''
end
for ws, flat in pairs(entries) do
  local index = index_of(ws, '')
  for i = 1, #flat, 1000 do
    if failed(redis.pcall('ZADD', index, 'NX', unpack(flat, i, math.min(i + 999, #flat)))) then
      for _, n in ipairs(entry_of[ws]) do out[n] = 'error' end
    end
  end
end
return out
