-- The body of update_status.lua, as a function of the KEYS and ARGV that script's header describes
-- (those left after the fence), so that finish.lua runs it on its own share of its keys and
-- arguments. Needs bump (includes/fence.lua, which every script including this includes first).
-- replay(last): the answer of a re-send of this call, read from its op marker (nil: none, a first
-- attempt), given the index of the last record key; own: this call keeps its own op marker
-- (KEYS[1]: update_status.lua), else the caller does (finish.lua: the reply then carries no
-- record, {'updated', {}, key, expiry}).
--- @include "record_check"
--- @include "lease"
--- @include "iso_record"
--- @include "retention"
-- update_status.lua's op marker: {key, record as the move left it, expiry}. It answers only a
-- re-send of its own call, which names the same record keys: a marker about another record is
-- another call's (a token drawn twice), never this one's answer.
local function marker_answer(KEYS, last)
  local saved = redis.call('GET', KEYS[1])
  if not saved then return nil end
  local first = cjson.decode(saved)
  for i = 2, last do
    if KEYS[i] == first[1] then return {'replayed', first[2], first[1], first[3] or 0} end
  end
  return {'not_mine'}
end
-- Whether the field, value pairs a move writes (ARGV[12 ..]) take the record out of running or
-- give it another claim than claim.
local function leaves_claim(ARGV, claim)
  for i = 12, #ARGV, 2 do
    if (ARGV[i] == 'status' and ARGV[i + 1] ~= 'running')
        or (ARGV[i] == 'claim' and ARGV[i + 1] ~= claim) then
      return true
    end
  end
  return false
end
local function update_record(KEYS, ARGV, replay, own)
  local extra = tonumber(ARGV[8]) or 0
  if extra > 1 then redis.call('UNLINK', unpack(KEYS, #KEYS - extra + 2, #KEYS)) end
  local last, leases = #KEYS - extra, false
  if extra > 0 then leases = KEYS[last + 1] end
  -- Each copy read once, whole: every check and the reply below come from these tables.
  local owned, records = {}, {}
  for i = 2, last do
    local record = load(KEYS[i])
    if addressed_in(record, ARGV[1]) then
      owned[#owned + 1] = KEYS[i]; records[#owned] = record
    end
  end
  -- A move fenced by its claim, of records all still running under that claim, that leaves
  -- running or that claim, is a first attempt: once made, no copy it moved is ever running under
  -- this claim again (a move out of 'running' is final; a claim is one hand-out's). Every copy
  -- the call names, not only the first: a re-send rebuilt after a phase switch may name a copy
  -- the first attempt did not move. Any other call may be a re-send: its op marker answers,
  -- whatever the keys hold now.
  local first = ARGV[6] ~= '' and #owned > 0 and leaves_claim(ARGV, ARGV[6])
  for n = 1, #owned do
    if not first then break end
    first = records[n].claim == ARGV[6] and records[n].status == 'running'
  end
  if not first then
    local again = replay(last)
    if again then return again end
  end
  if #owned == 0 then return {'missing'} end
  for n, key in ipairs(owned) do
    local field, reason = problem_in(records[n])
    if field then return {'corrupt', key, field, reason} end
  end
  local stored = records[1]
  local current = stored.status or ''
  local holder = stored.claim
  if ARGV[6] ~= '' and holder ~= ARGV[6] then
    return {'lease_lost', tostring(stored_count(stored.attempts)), current}
  end
  if not string.find(' ' .. ARGV[3] .. ' ', ' ' .. current .. ' ', 1, true) then
    return {'invalid', current}
  end
  if ARGV[5] ~= '' and stored.created_at ~= ARGV[5] then
    return {'invalid', current}
  end
  local fields, changed, status = {}, {}, current
  if ARGV[7] == '1' then
    local n = tostring(stored_count(stored.attempts) + 1)
    fields[1] = 'attempts'; fields[2] = n; changed['attempts'] = n
  end
  for i = 12, #ARGV, 2 do
    fields[#fields + 1] = ARGV[i]; fields[#fields + 1] = ARGV[i + 1]
    changed[ARGV[i]] = ARGV[i + 1]
    if ARGV[i] == 'status' then status = ARGV[i + 1] end
  end
  -- the size of the first copy once written (as it was, fields changed as given)
  local size = 0
  for k, v in pairs(stored) do
    if changed[k] == nil then size = size + #k + #v end
  end
  for k, v in pairs(changed) do size = size + #k + #v end
  if size > tonumber(ARGV[4]) then return {'too_large', size} end
  local first_rev, first_iso
  for n, key in ipairs(owned) do
    local iso = ARGV[9] ~= '' and iso_in(records[n])  -- before this write changes updated_at
    local rev = bumped(records[n])
    redis.call('HSET', key, '_rev', rev, unpack(fields))
    if iso then redis.call('HSET', key, 'updated_at', ARGV[9]) end
    if n == 1 then first_rev, first_iso = rev, iso end
  end
  -- a final move: every copy expires at one time (retention), set with the move, never again
  local at = status ~= current and expiry_of(stored, status, ARGV[10], ARGV[11])
  expire_all(owned, at)
  if leases and holder and current == 'running' and status ~= 'running' then
    redis.call('ZREM', leases, holder)
  end
  if not own then return {'updated', {}, owned[1], at or 0} end
  -- the first copy as it is now: as it was, and the fields written
  for k, v in pairs(changed) do stored[k] = v end
  stored['_rev'] = tostring(first_rev)
  if first_iso then stored['updated_at'] = ARGV[9] end
  local after = flat_of(stored)
  redis.call('SET', KEYS[1], cjson.encode({owned[1], after, at or 0}), 'EX', ARGV[2])
  return {'updated', after, owned[1], at or 0}
end
