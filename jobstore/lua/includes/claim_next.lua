-- The body of dequeue.lua, as a function of the KEYS and ARGV that script's header describes
-- (those left after the fence), so that finish.lua runs it on its own share of its keys and
-- arguments. Needs bump (includes/fence.lua, which every script including this includes first).
-- finish (finish.lua's call; nil for dequeue.lua's): {the marker as its move half read it (false:
-- none), the key and the expiry of the finished job}. The op marker (KEYS[3]) is written by mark
-- below, the one place that knows its layout.
--- @include "record_check"
--- @include "dead_letter"
--- @include "ids"
--- @include "lease"
--- @include "iso_record"
--- @include "retention"
local function claim_next(KEYS, ARGV, finish)
  if #KEYS >= 8 then redis.call('UNLINK', unpack(KEYS, 8, #KEYS)) end
  local reply
  local dead, reaped = {}, {}
  local now = now_ms()
  local compat = ARGV[10] == '1'
  -- the schemas read in this phase (in read order), and the others the strategy knows
  local reads, others = {}, {}
  for i = 13, #ARGV do
    local into = i <= 12 + tonumber(ARGV[12]) and reads or others
    into[#into + 1] = ARGV[i]
  end
  local mode = ''
  if compat then
    redis.call('HSETNX', KEYS[7], 'mode', 'shared')
    mode = redis.call('HGET', KEYS[7], 'mode')
  end
  -- The op marker (KEYS[3]), written once per call: {key, the record as handed out} once the
  -- call has claimed a job; finish's answers both its halves, {key or '', record or {}, key of
  -- the job finished, its expiry} (a marker without a key, '', has claimed nothing yet).
  -- Returns its JSON text, which is also the reply's record: one string for the client to read
  -- instead of a record's every field and value, encoded once for both.
  local function mark(key, record)
    local saved = {key, record}
    if finish then saved[3], saved[4] = finish[2], finish[3] end
    local text = cjson.encode(saved)
    redis.call('SET', KEYS[3], text, 'EX', ARGV[1])
    return text
  end
  -- the time to write to a record (read whole): in the form its times already have
  local function now_of(record) return iso_in(record) and ARGV[9] or ARGV[2] end
  local function bury(entry, reason, key, field)
    dead[#dead + 1] = push_letter(KEYS[4], ARGV[4], printable(entry), reason, key, field)
  end
  -- an entry's part before the keys it carries
  local function base_of(entry)
    local cut = string.find(entry, {{ CARRIED }}, 1, true)
    return cut and string.sub(entry, 1, cut - 1) or entry, cut
  end
  -- the computed schemas' keys an entry carries, and those the store resolved for it
  local function carried_of(entry)
    local keys = {}
    local base, cut = base_of(entry)
    if cut then
      for name, key in string.gmatch(string.sub(entry, cut), {{ CARRIED_PAIR }}) do
        keys[name] = key
      end
    end
    local resolved, rcut = base_of(ARGV[8])
    if rcut and resolved == base then
      for name, key in string.gmatch(string.sub(ARGV[8], rcut), {{ CARRIED_PAIR }}) do
        keys[name] = key
      end
    end
    return keys
  end
  -- the record keys of a bare job id: those of the schemas read in this phase whose key format
  -- needs no workspace id (a computed schema's, '\3', and a workspace-scoped one's, '\1', cannot)
  local function id_keys(id)
    local keys = {}
    for _, template in ipairs(reads) do
      if string.byte(template, 1) ~= 3 and not string.find(template, '\1', 1, true) then
        keys[#keys + 1] = (string.gsub(template, '\2', id))
      end
    end
    return keys
  end
  -- the workspace's record keys of the job in the schemas given (templates), in their order;
  -- nil when the entry lacks a computed schema's key
  local function keys_in(templates, entry, ws, id)
    local keys, carried = {}, nil
    for _, template in ipairs(templates) do
      local key
      if string.byte(template, 1) == 3 then
        carried = carried or carried_of(entry)
        key = carried[string.sub(template, 2)]
        if not key then return nil end
      else
        key = (string.gsub((string.gsub(template, '\1', ws)), '\2', id))
      end
      keys[#keys + 1] = key
    end
    return keys
  end
  -- workspace id, job id, stamp (false: none) of an entry, or nil after burying it (or, for a
  -- bare job id whose job is gone, after dropping it)
  local function parse(entry)
    entry = base_of(entry)
    local sep = string.find(entry, ':', 1, true)
    -- A bare job id: from the compatible queue, or (without one configured) left in jobstore's
    -- queue or leases by a version that claimed bare ids as they were: found through a schema
    -- keyed by the id alone either way, so that no such job is stranded.
    if not sep and is_id(entry) then
      local keys = id_keys(entry)
      local keyed = #keys > 0
      for _, key in ipairs(keys) do
        local ws = redis.call('HGET', key, 'workspace_id')
        if ws and is_id(ws) then return ws, entry, false end
        if redis.call('EXISTS', key) == 1 then
          bury(entry, 'its record names no valid workspace_id', key, 'workspace_id')
          return nil
        end
      end
      if not compat then  -- no record: an entry that cannot be parsed, as it always was
        bury(entry, {{ NO_SEPARATOR }})
        return nil
      end
      -- never dropped unseen: without a schema keyed by the id alone, the job cannot be found
      if not keyed then
        bury(entry, 'a bare job id, and no schema keyed by the job id alone is read in this phase')
      end
      return nil  -- keyed, and no record: a deleted job's id, dropped like any such entry
    end
    if not sep then bury(entry, {{ NO_SEPARATOR }}); return nil end
    local ws, id, stamp = string.sub(entry, 1, sep - 1), string.sub(entry, sep + 1), false
    sep = string.find(id, ':', 1, true)
    if sep then id, stamp = string.sub(id, 1, sep - 1), string.sub(id, sep + 1) end
    if not is_id(ws) then
      bury(entry, {{ BAD_WORKSPACE }})
    elseif not is_id(id) then
      bury(entry, {{ BAD_JOB }})
    else
      return ws, id, stamp
    end
    return nil
  end
  -- the workspace's copies of the job, in read order, and each copy's record (read once, whole);
  -- nil after burying the entry of a copy that cannot be decoded; nil, true when the entry lacks
  -- a computed schema's key
  local function copies(entry, ws, id)
    local owned, records = {}, {}
    local keys = keys_in(reads, entry, ws, id)
    if not keys then return nil, true end
    for _, key in ipairs(keys) do
      local record = load(key)
      if addressed_in(record, ws) then
        local field, reason = problem_in(record)
        if field then bury(entry, reason, key, field); return nil end
        owned[#owned + 1] = key; records[#owned] = record
      end
    end
    return owned, false, records
  end
  -- hand the job out to this call: running, attempt n, a claim of its own and its lease
  -- The claim names the job as a full entry, 'workspace:job:created_at' (a bare job id's too,
  -- with its record's workspace and created_at), so that any later store finds the job again
  -- from its lease, with or without the compatible queue, in any phase, on Cluster too.
  local function take(owned, records, entry, n, ws, id)
    local base = base_of(entry)
    if not string.find(base, ':', 1, true) then
      entry = ws .. ':' .. id .. ':' .. (records[1].created_at or '')
              .. string.sub(entry, #base + 1)
    end
    local claim = ARGV[7] .. ':' .. entry
    for i, key in ipairs(owned) do
      local r = records[i]
      r.status, r.updated_at, r._rev, r.attempts, r.claim =
        'running', now_of(r), tostring(bumped(r)), tostring(n), claim
      redis.call('HSET', key, 'status', r.status, 'updated_at', r.updated_at, '_rev', r._rev,
                 'attempts', r.attempts, 'claim', claim)
    end
    redis.call('ZADD', KEYS[5], now + tonumber(ARGV[5]), claim)
    -- the first copy as it is now
    return {'job', mark(owned[1], flat_of(records[1])), dead, owned[1], reaped, '', '', mode}
  end
  -- A claim list's entries back to the queue's oldest end, in order. A bare job id (moved there
  -- from the compatible queue) goes back as a full entry when a schema keyed by the id alone finds
  -- its record (as leaving the compatible queue writes it), so that a store without the
  -- compatible queue can take it too.
  local function requeue(list)
    return_list(list, KEYS[2], function(item)
      if is_id(item) then
        for _, key in ipairs(id_keys(item)) do
          local f = redis.call('HMGET', key, 'workspace_id', 'created_at')
          if f[1] and is_id(f[1]) then return f[1] .. ':' .. item .. ':' .. (f[2] or '') end
        end
      end
      return item
    end)
  end
  -- A re-sent call answers what its first attempt claimed (the marker keeps the record as it was
  -- handed out), whatever the key holds now: never a job another worker has since received.
  local first
  if finish then
    first = finish[1]
  else
    local marker = redis.call('GET', KEYS[3])
    first = marker and cjson.decode(marker)
  end
  if first and first[1] ~= '' then
    reply = {'replayed', cjson.encode(first), dead, first[1], reaped, '', '', mode}
  else
    local expired = expired_leases(KEYS[5], now, tonumber(ARGV[3]))
    for _, member in ipairs(expired) do
      local sep = string.find(member, ':', 1, true) or 0
      local head, entry = string.sub(member, 1, sep - 1), string.sub(member, sep + 1)
      local ws, id = nil, nil
      if head ~= 'list' then ws, id = parse(entry) end
      local owned, need, records = nil, false, nil
      if ws then owned, need, records = copies(entry, ws, id) end
      -- the job, still held by the expired claim, is handed out again, or fails at max attempts
      local held = not need and owned and #owned > 0 and records[1].claim == member
                   and records[1].status == 'running'
      local n = held and stored_count(records[1].attempts)
      -- failing: its expiry (false: none), and its copies in the schemas not read in this
      -- phase, which expire with it (looked up only when it expires: no 'need' otherwise)
      local failing, at, rest = held and n >= tonumber(ARGV[6]), false, {}
      if failing then
        at = expiry_of(records[1], 'failed', '', ARGV[11])
        if at then
          rest = keys_in(others, entry, ws, id)
          need = not rest
        end
      end
      if need then reply = {'need', {}, dead, '', reaped, entry, ws, mode}; break end
      redis.call('ZREM', KEYS[5], member)
      if head == 'list' then
        if entry ~= KEYS[1] then requeue(entry) end
      elseif failing then
        local why = string.format({{ LEASE_EXPIRED }}, n, tonumber(ARGV[6]))
        for i, key in ipairs(owned) do
          redis.call('HSET', key, 'status', 'failed', 'error', why, 'updated_at',
                     now_of(records[i]), '_rev', bumped(records[i]), 'claim', '')
          -- (the claim ended: LeaseLost for it)
        end
        -- a final move: every copy expires at one time, those it did not update too
        expire_all(owned, at)
        for _, key in ipairs(rest) do expire_copy(key, ws, at) end
        reaped[#reaped + 1] = 'failed'; reaped[#reaped + 1] = ws
      elseif held then
        reaped[#reaped + 1] = 'reclaimed'; reaped[#reaped + 1] = ws
        reply = take(owned, records, entry, n + 1, ws, id)
        break
      end
    end
  end
  -- the oldest entry: of the list given, else (popping the queue) of the compatible queue
  local function pop()
    local entry = redis.call('RPOP', KEYS[1])
    if entry then return entry, KEYS[1], 'RPUSH' end
    if compat and KEYS[1] == KEYS[2] then
      entry = redis.call('LPOP', KEYS[6])
      if entry then return entry, KEYS[6], 'LPUSH' end
    end
    return nil
  end
  for _ = 1, reply and 0 or tonumber(ARGV[3]) do
    local entry, from, back = pop()
    if not entry then reply = {'empty', {}, dead, '', reaped, '', '', mode}; break end
    local ws, id, stamp = parse(entry)
    local owned, need, records = nil, false, nil
    if ws then owned, need, records = copies(entry, ws, id) end
    if need then  -- back where it was, at the oldest end; the store resolves its keys
      redis.call(back, from, entry)
      reply = {'need', {}, dead, '', reaped, entry, ws, mode}
      break
    end
    if owned and #owned > 0 and records[1].status == 'pending'
        and (not stamp or records[1].created_at == stamp) then
      reply = take(owned, records, entry, stored_count(records[1].attempts) + 1, ws, id)
      break
    end
  end
  if KEYS[1] ~= KEYS[2] and not (reply and reply[1] == 'need') then
    requeue(KEYS[1])
    redis.call('ZREM', KEYS[5], list_lease(KEYS[1]))
  end
  reply = reply or {'busy', {}, dead, '', reaped, '', '', mode}
  if finish and not finish[1] and reply[1] ~= 'job' then  -- the move made, nothing claimed yet
    mark('', {})
  end
  return reply
end
