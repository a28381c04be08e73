"""The Lua scripts behind every write. Each one is a named constant with a header.

Keys arrive through ``KEYS``, built by the schema or the layout. The single exception is the
record key that ``DEQUEUE`` must find from a popped queue entry: it receives the schemas'
``lua_template`` (the key format, prefix filled in) and only substitutes the two ids.

Every write takes an op marker key made from a fresh token per call: redis-py re-sends a
command whose reply was lost, and the marker lets the re-sent script recognise that its own
earlier attempt already applied and answer as that attempt would have.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Lua:
    name: str
    source: str


# Prepended to every script that acts for a routed operation. A store routes by the migration
# phase it cached (at most a second old); the script re-checks that phase in the same atomic
# step, so no write ever lands under a phase that has since changed: a stale store is told
# 'stale', refreshes, and routes again. The prelude then drops its own KEYS/ARGV, so the body's
# header below describes the body's indices.
FENCE = r"""
-- fence: KEYS[1] migration state hash (any key when unfenced)
--        ARGV[1] phase this call was routed for ('' = unfenced)   ARGV[2] phase when none stored
if ARGV[1] ~= '' and (redis.call('HGET', KEYS[1], 'phase') or ARGV[2]) ~= ARGV[1] then
  return {'stale'}
end
table.remove(KEYS, 1)
table.remove(ARGV, 1)
table.remove(ARGV, 1)
"""


def fenced(name: str, body: str) -> Lua:
    return Lua(name, FENCE + body)


ENQUEUE = fenced(
    "enqueue",
    r"""
-- KEYS[1] op marker   KEYS[2] workspace index   KEYS[3] queue
-- KEYS[4 .. 3+n] record keys to write   KEYS[4+n ..] record keys that must not exist either
-- ARGV[1] n   ARGV[2] marker ttl (s)   ARGV[3] job id   ARGV[4] index score (created_at)
-- ARGV[5] queue entry   ARGV[6 ..] field, value pairs of the record
-- returns {'created'} | {'replayed', record of KEYS[4] as a flat list} | {'exists'}
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'replayed', redis.call('HGETALL', KEYS[4])}
end
for i = 4, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then return {'exists'} end
end
local fields = {}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
for i = 4, 3 + tonumber(ARGV[1]) do redis.call('HSET', KEYS[i], unpack(fields)) end
-- A script is not rolled back when a command fails (e.g. WRONGTYPE on a key in the way), so
-- undo the records by hand: a job is written with its index and queue entry, or not at all.
local indexed = redis.pcall('ZADD', KEYS[2], ARGV[4], ARGV[3])
local queued = type(indexed) == 'table' and indexed or redis.pcall('LPUSH', KEYS[3], ARGV[5])
if type(queued) == 'table' and queued.err then
  for i = 4, 3 + tonumber(ARGV[1]) do redis.call('DEL', KEYS[i]) end
  if type(indexed) ~= 'table' then redis.call('ZREM', KEYS[2], ARGV[3]) end
  return redis.error_reply(queued.err)
end
redis.call('SET', KEYS[1], '1', 'EX', ARGV[2])
return {'created'}
""",
)

UPDATE_STATUS = fenced(
    "update_status",
    r"""
-- KEYS[1] op marker   KEYS[2 ..] record keys, in read order
-- ARGV[1] workspace id   ARGV[2] marker ttl (s)   ARGV[3] statuses allowed before, ' '-separated
-- ARGV[4] max record bytes   ARGV[5] created_at the record must have ('' any)
-- ARGV[6 ..] field, value pairs to set
-- returns {'updated', record} | {'replayed', record} | {'missing'} | {'invalid', current status}
--         | {'too_large', size}   ({'invalid', ...} too when created_at differs: another job)
-- Only records owned by the workspace count: another workspace's record is never touched.
local owned = {}
for i = 2, #KEYS do
  if redis.call('HGET', KEYS[i], 'workspace_id') == ARGV[1] then owned[#owned + 1] = KEYS[i] end
end
if #owned == 0 then return {'missing'} end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'replayed', redis.call('HGETALL', owned[1])}
end
local current = redis.call('HGET', owned[1], 'status') or ''
if not string.find(' ' .. ARGV[3] .. ' ', ' ' .. current .. ' ', 1, true) then
  return {'invalid', current}
end
if ARGV[5] ~= '' and redis.call('HGET', owned[1], 'created_at') ~= ARGV[5] then
  return {'invalid', current}
end
local fields, merged = {}, {}
local stored = redis.call('HGETALL', owned[1])
for i = 1, #stored, 2 do merged[stored[i]] = stored[i + 1] end
for i = 6, #ARGV, 2 do
  fields[#fields + 1] = ARGV[i]; fields[#fields + 1] = ARGV[i + 1]
  merged[ARGV[i]] = ARGV[i + 1]
end
local size = 0
for k, v in pairs(merged) do size = size + #k + #v end
if size > tonumber(ARGV[4]) then return {'too_large', size} end
for _, key in ipairs(owned) do redis.call('HSET', key, unpack(fields)) end
redis.call('SET', KEYS[1], '1', 'EX', ARGV[2])
return {'updated', redis.call('HGETALL', owned[1])}
""",
)

DELETE = fenced(
    "delete",
    r"""
-- KEYS[1] op marker   KEYS[2] workspace index   KEYS[3 ..] record keys
-- ARGV[1] workspace id   ARGV[2] marker ttl (s)   ARGV[3] job id
-- returns 1 deleted (by this call, or by its own earlier attempt) | 0 nothing to delete
if redis.call('EXISTS', KEYS[1]) == 1 then return 1 end
local deleted = 0
for i = 3, #KEYS do
  if redis.call('HGET', KEYS[i], 'workspace_id') == ARGV[1] then
    redis.call('DEL', KEYS[i])
    deleted = 1
  end
end
if deleted == 1 then
  redis.call('ZREM', KEYS[2], ARGV[3])
  redis.call('SET', KEYS[1], '1', 'EX', ARGV[2])
end
return deleted
""",
)

DEQUEUE = fenced(
    "dequeue",
    r"""
-- KEYS[1] list to pop from: the queue, or this call's claim list   KEYS[2] the queue
-- KEYS[3] op marker
-- ARGV[1] marker ttl (s)   ARGV[2] now   ARGV[3] most entries to examine
-- ARGV[4 ..] record key templates in read order; byte 1 stands for the workspace id, byte 2
--            for the job id (the schemas' lua_template)
-- returns {'job', record} | {'replayed', record} | {'empty'} | {'busy'}
-- Entries are 'workspace:job:created_at' ('workspace:job' from before 0.1: any record of the id).
-- Entries of deleted, cancelled or already running jobs are dropped, and so is an entry whose
-- created_at is not the record's (its job was deleted and the id enqueued again, with an entry
-- of its own). Whatever a claim list still holds goes back to the queue's head, in order.
local reply
local marker = redis.call('GET', KEYS[3])
if marker then reply = {'replayed', redis.call('HGETALL', marker)} end
for _ = 1, reply and 0 or tonumber(ARGV[3]) do
  local entry = redis.call('RPOP', KEYS[1])
  if not entry then reply = {'empty'}; break end
  local sep = string.find(entry, ':', 1, true)
  local ws, id = string.sub(entry, 1, sep - 1), string.sub(entry, sep + 1)
  local stamp = false
  sep = string.find(id, ':', 1, true)
  if sep then id, stamp = string.sub(id, 1, sep - 1), string.sub(id, sep + 1) end
  local owned = {}
  for i = 4, #ARGV do
    local key = (string.gsub((string.gsub(ARGV[i], '\1', ws)), '\2', id))
    if redis.call('HGET', key, 'workspace_id') == ws then owned[#owned + 1] = key end
  end
  if #owned > 0 and redis.call('HGET', owned[1], 'status') == 'pending'
      and (not stamp or redis.call('HGET', owned[1], 'created_at') == stamp) then
    for _, key in ipairs(owned) do
      redis.call('HSET', key, 'status', 'running', 'updated_at', ARGV[2])
    end
    redis.call('SET', KEYS[3], owned[1], 'EX', ARGV[1])
    reply = {'job', redis.call('HGETALL', owned[1])}
    break
  end
end
if KEYS[1] ~= KEYS[2] then
  local rest = redis.call('LRANGE', KEYS[1], 0, -1)
  if #rest > 0 then redis.call('RPUSH', KEYS[2], unpack(rest)) end
  redis.call('DEL', KEYS[1])
end
return reply or {'busy'}
""",
)

SYNC_RECORD = Lua(
    "sync_record",
    r"""
-- KEYS[1] 'from' record   KEYS[2] 'to' record   KEYS[3] workspace index
-- ARGV[1] workspace id   ARGV[2] job id   ARGV[3] mode 'copy' | 'merge'   ARGV[4] '1' dry run
-- returns 'copied' | 'copied-back' | 'merged' | 'same' | 'exists' | 'gone' | 'foreign'
-- copy:  write 'to' as a copy of 'from' (every field, TTL kept) only if 'to' does not exist:
--        a newer record is never overwritten, and a record deleted meanwhile is never revived.
-- merge: as copy; if only 'to' exists, copy it back; if both exist and differ, write the union
--        of their fields to both, the newer record (updated_at; tie: 'from') winning conflicts.
-- Only records owned by the workspace are touched.
local function load(key)
  local flat = redis.call('HGETALL', key)
  local record = {}
  for i = 1, #flat, 2 do record[flat[i]] = flat[i + 1] end
  return record, #flat > 0
end
local function write(key, record, ttl_of)
  local flat = {}
  for k, v in pairs(record) do flat[#flat + 1] = k; flat[#flat + 1] = v end
  redis.call('HSET', key, unpack(flat))
  if ttl_of then
    local ttl = redis.call('PTTL', ttl_of)
    if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
  end
  redis.call('ZADD', KEYS[3], 'NX', tonumber(record['created_at']) or 0, ARGV[2])
end
local from, has_from = load(KEYS[1])
local to, has_to = load(KEYS[2])
if (has_from and from['workspace_id'] ~= ARGV[1]) or (has_to and to['workspace_id'] ~= ARGV[1]) then
  return 'foreign'
end
local dry = ARGV[4] == '1'
if not has_from and not has_to then return 'gone' end
if not has_to then
  if not dry then write(KEYS[2], from, KEYS[1]) end
  return 'copied'
end
if ARGV[3] == 'copy' then
  if has_from then return 'exists' end
  return 'gone'
end
if not has_from then
  if not dry then write(KEYS[1], to, KEYS[2]) end
  return 'copied-back'
end
local differ = false
for k, v in pairs(from) do if to[k] ~= v then differ = true end end
for k, v in pairs(to) do if from[k] ~= v then differ = true end end
if not differ then return 'same' end
if not dry then
  local newer, older = from, to
  if (tonumber(to['updated_at']) or 0) > (tonumber(from['updated_at']) or 0) then
    newer, older = to, from
  end
  local union = {}
  for k, v in pairs(older) do union[k] = v end
  for k, v in pairs(newer) do union[k] = v end
  write(KEYS[1], union, nil)
  write(KEYS[2], union, nil)
end
return 'merged'
""",
)

CLEANUP_RECORD = Lua(
    "cleanup_record",
    r"""
-- KEYS[1] source record   KEYS[2] target record
-- ARGV[1] workspace id   ARGV[2] '1' dry run
-- returns 'deleted' | 'kept' (no target copy, or not the same record) | 'gone' | 'foreign'
-- The same record: the target holds every source field with the same value, except that
-- status, result, error and updated_at may differ when the target is at least as new (the job
-- moved on after the switch to target-only).
local source = redis.call('HGETALL', KEYS[1])
if #source == 0 then return 'gone' end
local s, t = {}, {}
for i = 1, #source, 2 do s[source[i]] = source[i + 1] end
if s['workspace_id'] ~= ARGV[1] then return 'foreign' end
local target = redis.call('HGETALL', KEYS[2])
if #target == 0 then return 'kept' end
for i = 1, #target, 2 do t[target[i]] = target[i + 1] end
local moved_on = (tonumber(t['updated_at']) or 0) >= (tonumber(s['updated_at']) or 0)
local mutable = {status = true, result = true, error = true, updated_at = true}
for k, v in pairs(s) do
  if t[k] ~= v and not (moved_on and mutable[k]) then return 'kept' end
end
if ARGV[2] ~= '1' then redis.call('DEL', KEYS[1]) end
return 'deleted'
""",
)

SET_STATE = Lua(
    "set_state",
    r"""
-- KEYS[1] migration state hash   KEYS[2] migration log list
-- ARGV[1] the phase the caller based its decision on ('' when none was stored)
-- ARGV[2] log entry (JSON)   ARGV[3 ..] field, value pairs of the new state
-- returns 1 written | 0 the stored phase changed meanwhile (nothing written)
-- Compare-and-set, so two operators switching at once cannot both win.
local current = redis.call('HGET', KEYS[1], 'phase') or ''
if current ~= ARGV[1] then return 0 end
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], 0, 999)
return 1
""",
)

# -- Redis Cluster: one script per slot -----------------------------------------------------------
# Keys of a job live in several slots there (each record, the index, the queue), so an operation
# is a sequence of single-slot scripts in a fixed order; docs/cluster.md states the guarantees.

CREATE_RECORD = Lua(
    "create_record",
    r"""
-- KEYS[1] op marker   KEYS[2] record   KEYS[3] the record's tombstone
-- ARGV[1] marker ttl (s)   ARGV[2 ..] field, value pairs
-- returns {'created'} | {'replayed'} | {'exists', record}
if redis.call('EXISTS', KEYS[1]) == 1 then return {'replayed'} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'exists', redis.call('HGETALL', KEYS[2])} end
local fields = {}
for i = 2, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[2], unpack(fields))
redis.call('DEL', KEYS[3])
redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
return {'created'}
""",
)

PUSH_ONCE = Lua(
    "push_once",
    r"""
-- KEYS[1] op marker   KEYS[2] queue
-- ARGV[1] marker ttl (s)   ARGV[2] entry
-- returns 1 pushed | 0 this call's entry was pushed already
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
return 1
""",
)

DELETE_RECORD = Lua(
    "delete_record",
    r"""
-- KEYS[1] op marker   KEYS[2] record   KEYS[3] the record's tombstone
-- ARGV[1] workspace id   ARGV[2] marker ttl (s)   ARGV[3] tombstone ttl (s)   ARGV[4] now
-- returns 1 deleted (now or by this call's earlier attempt) | 0 not there
-- Leaves a tombstone unless the key holds another workspace's record, so that no copy or repair
-- running beside the delete can bring the record back. The tombstone is a hash of workspace id
-- -> deletion time: on a key shared by workspaces (legacy), one workspace's delete of an id it
-- does not hold must not stop the copy of another workspace's job.
if redis.call('EXISTS', KEYS[1]) == 1 then return 1 end
local owner = redis.call('HGET', KEYS[2], 'workspace_id')
if owner and owner ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
redis.call('EXPIRE', KEYS[3], ARGV[3])
if not owner then return 0 end
redis.call('DEL', KEYS[2])
redis.call('SET', KEYS[1], '1', 'EX', ARGV[2])
return 1
""",
)

MIRROR = Lua(
    "mirror",
    r"""
-- KEYS[1] op marker   KEYS[2] record (a copy that follows the one that took a move)
-- ARGV[1] workspace id   ARGV[2] marker ttl (s)   ARGV[3 ..] field, value pairs, updated_at among them
-- returns 'done' | 'missing' | 'newer' (the copy already holds a later write: left alone)
if redis.call('EXISTS', KEYS[1]) == 1 then return 'done' end
if redis.call('HGET', KEYS[2], 'workspace_id') ~= ARGV[1] then return 'missing' end
local fields, mine = {}, nil
for i = 3, #ARGV, 2 do
  fields[#fields + 1] = ARGV[i]; fields[#fields + 1] = ARGV[i + 1]
  if ARGV[i] == 'updated_at' then mine = tonumber(ARGV[i + 1]) end
end
-- Writes reach the copies one after another; a late one must not undo a later one.
if (tonumber(redis.call('HGET', KEYS[2], 'updated_at')) or 0) > (mine or 0) then return 'newer' end
redis.call('HSET', KEYS[2], unpack(fields))
redis.call('SET', KEYS[1], '1', 'EX', ARGV[2])
return 'done'
""",
)

RETURN_CLAIMS = Lua(
    "return_claims",
    r"""
-- KEYS[1] claim list   KEYS[2] queue
-- returns how many entries went back to the queue's head (oldest end), in order
local rest = redis.call('LRANGE', KEYS[1], 0, -1)
if #rest > 0 then redis.call('RPUSH', KEYS[2], unpack(rest)) end
redis.call('DEL', KEYS[1])
return #rest
""",
)

COPY_IF_ABSENT = Lua(
    "copy_if_absent",
    r"""
-- KEYS[1] record to write   KEYS[2] its tombstone   KEYS[3] the workspace index (or any key
--         of this slot, when the index lives elsewhere)
-- ARGV[1] job id   ARGV[2] ttl in ms (0: none)   ARGV[3] '1' to add to the index
-- ARGV[4] created_at   ARGV[5] workspace id   ARGV[6 ..] field, value pairs
-- returns 'copied' | 'exists' | 'tombstoned' (deleted since it was read: not brought back)
local tomb = redis.call('HGET', KEYS[2], ARGV[5])
if tomb and tonumber(tomb) >= (tonumber(ARGV[4]) or 0) then return 'tombstoned' end
if redis.call('EXISTS', KEYS[1]) == 1 then return 'exists' end
local fields = {}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if ARGV[3] == '1' then redis.call('ZADD', KEYS[3], 'NX', tonumber(ARGV[4]) or 0, ARGV[1]) end
return 'copied'
""",
)

WRITE_IF_UNCHANGED = Lua(
    "write_if_unchanged",
    r"""
-- KEYS[1] record
-- ARGV[1] updated_at it had when read ('' = it must not exist)   ARGV[2] 'delete' | 'write'
-- ARGV[3 ..] field, value pairs (write)
-- returns 'done' | 'changed' (it moved on since it was read: nothing done)
local now = redis.call('HGET', KEYS[1], 'updated_at') or ''
if now ~= ARGV[1] then return 'changed' end
if ARGV[2] == 'delete' then redis.call('DEL', KEYS[1]); return 'done' end
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
return 'done'
""",
)

READ_RECORDS = Lua(
    "read_records",
    r"""
-- KEYS[1 ..] record keys   returns the HGETALL of each, read at one instant (standalone only:
-- verify compares a record with its counterpart, and a write between two reads is no difference)
local out = {}
for i = 1, #KEYS do out[i] = redis.call('HGETALL', KEYS[i]) end
return out
""",
)

ALL = (ENQUEUE, UPDATE_STATUS, DELETE, DEQUEUE, SYNC_RECORD, CLEANUP_RECORD, SET_STATE,
       CREATE_RECORD, PUSH_ONCE, DELETE_RECORD, MIRROR, RETURN_CLAIMS, COPY_IF_ABSENT,
       WRITE_IF_UNCHANGED, READ_RECORDS)
