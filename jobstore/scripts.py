"""The Lua scripts behind every write. Each one is a named constant with a header.

Keys arrive through ``KEYS``, built by the schema or the layout. One exception is the
record key that ``DEQUEUE`` must find from a popped queue entry: for a schema with a key format
it receives the schema's ``lua_template`` (the format, prefix filled in) and only substitutes
the two ids; a computed schema's key is carried by the queue entry (the enqueue wrote it there),
or the script asks the store for it (``need``). The other exception is ``PASS_BATCH``, the
standalone migration passes' script: it reads the ids off the scanned keys and puts them into
the schemas' templates (the other copy's key, the workspace index), as DEQUEUE does; computed
schemas keep the per-record scripts, whose keys are built in Python. No other script computes
a key.

Every write takes an op marker key made from a fresh token per call: redis-py re-sends a
command whose reply was lost, and the marker lets the re-sent script recognise that its own
earlier attempt already applied and answer as that attempt would have.
"""

from __future__ import annotations

from dataclasses import dataclass

from .job import NOT_UTF8, TEXT_FIELDS
from .rules import LUA as RULES


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
-- A record's write count after one more write (jobstore.rules): per copy, so that a copy that
-- missed writes stays recognisably older.
local function bump(key)
  local v = redis.call('HGET', key, '_rev')
  if v and #v <= 15 and string.match(v, '^%d+$') then return tonumber(v) + 1 end
  return 1
end
"""


def fenced(name: str, body: str) -> Lua:
    return Lua(name, FENCE + body)


# Stored times: jobstore.job.parse_time in Lua. to_epoch(v) is the epoch seconds of epoch text or
# ISO 8601 text (a 'T' or a space, optional seconds and fraction, zone 'Z', +HH:MM, +HHMM, +HH;
# none is UTC), else nil; is_iso(v) tells the two forms apart, so that an update writes the form
# the record already has.
TIME = r"""
local function epoch_number(v)
  if not (string.match(v, '^[+-]?%d+%.?%d*$') or string.match(v, '^[+-]?%d+%.?%d*[eE][+-]?%d+$')) then
    return nil
  end
  local n = tonumber(v)
  if n == nil or n ~= n or n == math.huge or n == -math.huge then return nil end
  return n
end
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  return era * 146097 + yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy - 719468
end
local function iso_parts(v)
  local y, mo, d, rest = string.match(v, '^(%d%d%d%d)%-(%d%d)%-(%d%d)(.*)$')
  if not y then return nil end
  local h, mi, s, frac, zone = '0', '0', '0', '', ''
  if rest ~= '' then
    local hh, mm, tail = string.match(rest, '^[T ](%d%d):(%d%d)(.*)$')
    if not hh then return nil end
    h, mi = hh, mm
    local ss, tail2 = string.match(tail, '^:(%d%d)(.*)$')
    if ss then
      s, tail = ss, tail2
      local f, tail3 = string.match(tail, '^[.,](%d+)(.*)$')
      if f then
        if #f > 9 then return nil end
        frac, tail = f, tail3
      end
    end
    if tail ~= '' then
      if not (tail == 'Z' or string.match(tail, '^[+-]%d%d$') or string.match(tail, '^[+-]%d%d:?%d%d$')) then
        return nil
      end
      zone = tail
    end
  end
  return tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi), tonumber(s), frac, zone
end
local function to_epoch(v)
  if not v or v == '' then return nil end
  local n = epoch_number(v)
  if n then return n end
  local y, mo, d, h, mi, s, frac, zone = iso_parts(v)
  if not y then return nil end
  local leap = (y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0
  local dim = ({31, leap and 29 or 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31})[mo]
  if y < 1 or not dim or d < 1 or d > dim or h > 23 or mi > 59 or s > 59 then return nil end
  local offset = 0
  if zone ~= '' and zone ~= 'Z' then
    local digits = string.gsub(string.sub(zone, 2), ':', '')
    local oh, om = tonumber(string.sub(digits, 1, 2)), tonumber(string.sub(digits, 3)) or 0
    if oh > 23 or om > 59 then return nil end
    offset = (oh * 3600 + om * 60) * (string.sub(zone, 1, 1) == '+' and 1 or -1)
  end
  local t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s - offset
  if frac ~= '' then t = t + tonumber(frac) / 10 ^ #frac end
  return t
end
local function is_iso(v) return v ~= nil and epoch_number(v) == nil and iso_parts(v) ~= nil end
"""


# Whether a record reads back as a job: jobstore.job.record_problem, the same rules in Lua (the
# differential test is tests/test_corrupt_records.py). Embedded in the scripts that write to a
# record they did not create, so that nothing is written to a record no reader could decode.
# jobstore.job's UTF-8 rule in Lua: the fields a job is read from (job.TEXT_FIELDS, in the same
# order) must hold UTF-8 text, as Python's strict decoder takes it (no overlong forms, no
# surrogates, nothing past U+10FFFF). An ASCII value is passed by one string.find.
TEXT = ("local TEXT_FIELDS = {" + ", ".join(f"'{name}'" for name in TEXT_FIELDS) + "}\n"
        + f"local NOT_UTF8 = '{NOT_UTF8}'\n" + r"""
local function utf8_text(s)
  if not string.find(s, '[\128-\255]') then return true end
  local i, n = 1, #s
  while i <= n do
    local c = string.byte(s, i)
    local size, low, high = 1, 0x80, 0xBF
    if c < 0x80 then size = 1
    elseif c >= 0xC2 and c <= 0xDF then size = 2
    elseif c >= 0xE0 and c <= 0xEF then
      size = 3
      if c == 0xE0 then low = 0xA0 elseif c == 0xED then high = 0x9F end
    elseif c >= 0xF0 and c <= 0xF4 then
      size = 4
      if c == 0xF0 then low = 0x90 elseif c == 0xF4 then high = 0x8F end
    else return false end
    if size > 1 then
      if i + size - 1 > n then return false end
      local c2 = string.byte(s, i + 1)
      if c2 < low or c2 > high then return false end
      for j = i + 2, i + size - 1 do
        local cj = string.byte(s, j)
        if cj < 0x80 or cj > 0xBF then return false end
      end
    end
    i = i + size
  end
  return true
end
""")


RECORD_CHECK = r"""
local JOB_STATUSES = {pending = true, running = true, completed = true, failed = true,
                      cancelled = true}
""" + TEXT + TIME + r"""
local function is_time(v) return to_epoch(v) ~= nil end
-- returns field, reason of the first problem of the record at key, or nil
local function record_problem(key)
  local f = redis.call('HMGET', key, 'job_id', 'workspace_id', 'status', 'created_at', 'updated_at')
  if not f[1] or f[1] == '' then return 'job_id', 'missing' end
  if not f[2] or f[2] == '' then return 'workspace_id', 'missing' end
  if f[3] and f[3] ~= '' and not JOB_STATUSES[f[3]] then return 'status', 'not a job status' end
  if not f[4] or f[4] == '' then return 'created_at', 'missing' end
  if not is_time(f[4]) then return 'created_at', 'not a time (epoch seconds or ISO 8601)' end
  if f[5] and f[5] ~= '' and not is_time(f[5]) then
    return 'updated_at', 'not a time (epoch seconds or ISO 8601)'
  end
  local text = redis.call('HMGET', key, unpack(TEXT_FIELDS))
  for i = 1, #TEXT_FIELDS do
    if text[i] and not utf8_text(text[i]) then return TEXT_FIELDS[i], NOT_UTF8 end
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
"""


# Leases (jobstore.layout.StoreKeys.leases): lease times are the server's (TIME, in ms), never a
# client's; a record's attempt count is read like a write count (up to 15 digits, else 0).
LEASE = r"""
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function attempts_of(key)
  local v = redis.call('HGET', key, 'attempts')
  if v and #v <= 15 and string.match(v, '^%d+$') then return tonumber(v) end
  return 0
end
"""


# A record whose times are ISO 8601 text (written by other code) keeps that form when jobstore
# updates it, so that the readers it was written for still read it. Needs RECORD_CHECK's TIME.
ISO_RECORD = r"""
local function iso_record(key)
  local t = redis.call('HMGET', key, 'updated_at', 'created_at')
  return is_iso((t[1] and t[1] ~= '') and t[1] or t[2])
end
"""


ENQUEUE = fenced(
    "enqueue",
    r"""
-- Any number of jobs in one call (enqueue: one; enqueue_many: a chunk of its batch), each
-- written with its index and queue entry, or not at all, whatever happens to the others.
-- KEYS[1] queue   KEYS[2] the compatible queue   KEYS[3] its mode hash (with ARGV[1] '1'; else
--   any keys)   then per job: its tombstone (see DELETE), its workspace index, the record keys
--   to write, the record keys that must not exist either
-- ARGV[1] '1': a compatible queue is configured   ARGV[2] number of jobs   then per job: number
--   of keys to write, number of keys to check, this call's token (the record's '_op' field
--   too, among the pairs), job id, index score (created_at), queue entry, number of field and
--   value strings, the record's field, value pairs
-- returns per job {'created'} | {'replayed'} (this call's own earlier attempt created the job:
--   the caller answers with the job it sent, never with what the key holds now) | {'exists'}
--   | {'error', message} (Redis refused a write: nothing of that job is left)
-- No marker key: the record names the call that created it ('_op'), and a delete keeps the
-- tokens of what it deleted in the job's tombstone for the marker ttl, so that a re-sent call
-- recognises its first attempt even when that job was run and deleted in between.
-- With a compatible queue (the replaced system's list of bare job ids), jobs are RPUSHed there
-- as its producers do, until the queue mode says the fleet has left it; then to jobstore's own.
local shared = false
if ARGV[1] == '1' then
  redis.call('HSETNX', KEYS[3], 'mode', 'shared')
  shared = redis.call('HGET', KEYS[3], 'mode') ~= 'left'
end
local function enqueue_one(tomb, index, first, writes, last, token, id, score, entry, p1, p2)
  if redis.pcall('HGET', KEYS[first], '_op') == token or redis.call('HEXISTS', tomb, token) == 1 then
    return {'replayed'}
  end
  for i = first, last do
    if redis.call('EXISTS', KEYS[i]) == 1 then return {'exists'} end
  end
  -- A script is not rolled back when a command fails (OOM, a key of the wrong type), so undo
  -- by hand: a job is written with its index and queue entry, or not at all.
  local failed = false
  for i = first, writes do
    failed = redis.pcall('HSET', KEYS[i], unpack(ARGV, p1, p2))
    if type(failed) == 'table' and failed.err then
      for j = first, i - 1 do redis.call('DEL', KEYS[j]) end
      return {'error', failed.err}
    end
  end
  local push, queue, item = 'LPUSH', KEYS[1], entry
  if shared then push, queue, item = 'RPUSH', KEYS[2], id end
  local indexed = redis.pcall('ZADD', index, score, id)
  local queued = type(indexed) == 'table' and indexed or redis.pcall(push, queue, item)
  if type(queued) == 'table' and queued.err then
    for i = first, writes do redis.call('DEL', KEYS[i]) end
    if type(indexed) ~= 'table' then redis.call('ZREM', index, id) end
    return {'error', queued.err}
  end
  return {'created'}
end
local out, k, a = {}, 4, 3
for j = 1, tonumber(ARGV[2]) do
  local nw, nc, np = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 6])
  out[j] = enqueue_one(KEYS[k], KEYS[k + 1], k + 2, k + 1 + nw, k + 1 + nw + nc, ARGV[a + 2],
                       ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], a + 7, a + 6 + np)
  k, a = k + 2 + nw + nc, a + 7 + np
end
return out
""",
)

UPDATE_STATUS = fenced(
    "update_status",
    RECORD_CHECK + LEASE + ISO_RECORD + r"""
-- KEYS[1] op marker   KEYS[2 ..] record keys, in read order   (last: the leases, see ARGV[8])
-- ARGV[1] workspace id   ARGV[2] marker ttl (s)   ARGV[3] statuses allowed before, ' '-separated
-- ARGV[4] max record bytes   ARGV[5] created_at the record must have ('' any)
-- ARGV[6] the claim the caller must hold ('' none)   ARGV[7] '1': this move hands the job out
--         (attempts + 1)   ARGV[8] how many KEYS follow the records: 0 (Cluster), else the
--         leases sorted set (standalone) and then op markers of this store's earlier calls that
--         have their answer (no re-send of them can come), deleted first
-- ARGV[9] the updated_at to write to a record whose times are ISO 8601 text ('' none: as given)
-- ARGV[10 ..] field, value pairs to set
-- returns {'updated', record, key} | {'replayed', record, key} | {'missing'}
--         | {'not_mine'} (the marker is another call's: draw another token)
--         | {'invalid', current status} | {'too_large', size} | {'corrupt', key, field, reason}
--         | {'lease_lost', attempts of the record, its status}
--         ({'invalid', ...} too when created_at differs: another job)
-- Only records owned by the workspace count: another workspace's record is never touched. A
-- record without a workspace_id, or one that would not decode, stops the update: nothing written.
-- A re-sent call answers what its first attempt answered (the marker keeps it), whatever the
-- keys hold now: never another incarnation's record, never a second claim. A move out of
-- 'running' ends the record's claim: its lease is dropped (standalone; on Cluster the caller
-- drops it, and a lease left behind is dropped when it runs out).
local extra = tonumber(ARGV[8]) or 0
for i = #KEYS - extra + 2, #KEYS do redis.call('UNLINK', KEYS[i]) end
local last, leases = #KEYS - extra, false
local saved = redis.call('GET', KEYS[1])
if saved then
  -- The marker answers only a re-send of its own call, which names the same record keys: a
  -- marker about another record is another call's (a token drawn twice), never this one's answer.
  local first = cjson.decode(saved)
  for i = 2, last do
    if KEYS[i] == first[1] then return {'replayed', first[2], first[1]} end
  end
  return {'not_mine'}
end
if extra > 0 then leases = KEYS[last + 1] end
local owned = {}
for i = 2, last do
  if addressed(KEYS[i], ARGV[1]) then owned[#owned + 1] = KEYS[i] end
end
if #owned == 0 then return {'missing'} end
for _, key in ipairs(owned) do
  local field, reason = record_problem(key)
  if field then return {'corrupt', key, field, reason} end
end
local current = redis.call('HGET', owned[1], 'status') or ''
local holder = redis.call('HGET', owned[1], 'claim')
if ARGV[6] ~= '' and holder ~= ARGV[6] then
  return {'lease_lost', tostring(attempts_of(owned[1])), current}
end
if not string.find(' ' .. ARGV[3] .. ' ', ' ' .. current .. ' ', 1, true) then
  return {'invalid', current}
end
if ARGV[5] ~= '' and redis.call('HGET', owned[1], 'created_at') ~= ARGV[5] then
  return {'invalid', current}
end
local fields, merged, status = {}, {}, current
local stored = redis.call('HGETALL', owned[1])
for i = 1, #stored, 2 do merged[stored[i]] = stored[i + 1] end
if ARGV[7] == '1' then
  local n = tostring(attempts_of(owned[1]) + 1)
  fields[1] = 'attempts'; fields[2] = n; merged['attempts'] = n
end
for i = 10, #ARGV, 2 do
  fields[#fields + 1] = ARGV[i]; fields[#fields + 1] = ARGV[i + 1]
  merged[ARGV[i]] = ARGV[i + 1]
  if ARGV[i] == 'status' then status = ARGV[i + 1] end
end
local size = 0
for k, v in pairs(merged) do size = size + #k + #v end
if size > tonumber(ARGV[4]) then return {'too_large', size} end
for _, key in ipairs(owned) do
  local iso = ARGV[9] ~= '' and iso_record(key)  -- before this write changes updated_at
  redis.call('HSET', key, '_rev', bump(key), unpack(fields))
  if iso then redis.call('HSET', key, 'updated_at', ARGV[9]) end
end
if leases and holder and current == 'running' and status ~= 'running' then
  redis.call('ZREM', leases, holder)
end
local after = redis.call('HGETALL', owned[1])
redis.call('SET', KEYS[1], cjson.encode({owned[1], after}), 'EX', ARGV[2])
return {'updated', after, owned[1]}
""",
)

DELETE = fenced(
    "delete",
    r"""
-- KEYS[1] the job's tombstone (a hash of call tokens: jobstore.layout.StoreKeys.gone)
-- KEYS[2] workspace index   KEYS[3] leases   KEYS[4 ..] record keys
-- ARGV[1] workspace id   ARGV[2] marker ttl (s)   ARGV[3] job id   ARGV[4] this call's token
-- returns 1 deleted (by this call, or by its own earlier attempt) | 0 nothing to delete
-- The tombstone keeps, for the marker ttl, this call's token and the '_op' token of each record
-- it deleted: a re-sent delete answers 1, and a re-sent enqueue of a job that was run and
-- deleted before the enqueue's reply came back does not bring the job back (see ENQUEUE).
-- The claim a deleted record held ends with it: its lease is dropped (extend: LeaseLost).
if redis.call('HEXISTS', KEYS[1], ARGV[4]) == 1 then return 1 end
local gone = {ARGV[4], '1'}
for i = 4, #KEYS do
  if redis.call('HGET', KEYS[i], 'workspace_id') == ARGV[1] then
    local made = redis.call('HGET', KEYS[i], '_op')
    if made then gone[#gone + 1] = made; gone[#gone + 1] = '1' end
    local claim = redis.call('HGET', KEYS[i], 'claim')
    if claim and claim ~= '' then redis.call('ZREM', KEYS[3], claim) end
    redis.call('DEL', KEYS[i])
    gone.deleted = true
  end
end
if not gone.deleted then return 0 end
redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('HSET', KEYS[1], unpack(gone))
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
""",
)

# Dead letters, written by DEQUEUE here and by BURY on Redis Cluster: JSON objects with the entry
# (bytes outside printable ASCII, and backslash, as \xNN), the reason, the time and, for a
# record that cannot be decoded, its key and field (jobstore.dead_letters has the Python side).
DEAD_LETTER = r"""
local function printable(text)
  return (string.gsub(text, '[%c\128-\255\\]', function(c)
    return string.format('\\x%02x', string.byte(c))
  end))
end
local function is_id(s)
  return #s >= 1 and #s <= 128 and not string.find(s, '[^A-Za-z0-9_.%-]')
end
"""

DEQUEUE = fenced(
    "dequeue",
    RECORD_CHECK + DEAD_LETTER + LEASE + ISO_RECORD + r"""
-- KEYS[1] list to pop from: the queue, or this call's claim list   KEYS[2] the queue
-- KEYS[3] op marker   KEYS[4] dead-letter list   KEYS[5] leases (sorted set)
-- KEYS[6] the compatible queue (a list of bare job ids; with ARGV[10] '1')   KEYS[7] queue mode
-- ARGV[1] marker ttl (s)   ARGV[2] now (updated_at)   ARGV[3] most entries to examine
-- ARGV[4] most dead letters kept   ARGV[5] lease (ms)   ARGV[6] max attempts
-- ARGV[7] this call's token (a claim is '<token>:<entry>')
-- ARGV[8] keys the store computed for one entry ('' none): '<entry base>' then, per computed
--         schema, byte 31 '<schema name>=<key>'
-- ARGV[9] now as ISO 8601 (updated_at of a record whose times are ISO 8601 text)
-- ARGV[10] '1': a compatible queue is configured (KEYS[6], KEYS[7])
-- ARGV[11 ..] the schemas in read order: a record key template (byte 1 stands for the workspace
--             id, byte 2 for the job id: the schema's lua_template), or byte 3 and a computed
--             schema's name: its key is carried by the entry (after byte 31, as in ARGV[8])
-- returns {kind, record, dead, key, reaped, entry, workspace, mode}; kind 'job' | 'replayed' |
--         'empty' | 'busy' | 'need' (the entry carries no key of a computed schema: it is left
--         where it was, and the store calls again with ARGV[8] for it); dead: the dead letters
--         this call wrote (JSON texts); reaped: outcome, workspace pairs of the leases that ran
--         out ('reclaimed' | 'failed'); mode: the compatible queue's mode ('shared' | 'left')
-- A bare job id (an entry of the compatible queue, or one moved from it) is found through the
-- schemas keyed by the job id alone (legacy): their record names the workspace. The own queue
-- is popped first, then the compatible queue, from its oldest end (LPOP, as its workers do).
-- First the leases that ran out (server time): a job still held by its expired claim is handed
-- out again to this call, under a new claim and attempt, or, at max attempts, fails with the
-- reason; a claim list of a dequeue that never finished goes back to the queue; any other
-- expired lease (the job finished, was deleted or taken over) is dropped. Then the queue:
-- entries are 'workspace:job:created_at' ('workspace:job' from before 0.1: any record of the
-- id). Entries of deleted, cancelled or already running jobs are dropped, and so is an entry
-- whose created_at is not the record's (its job was deleted and the id enqueued again, with an
-- entry of its own). An entry that cannot be parsed, or whose record (any copy of the
-- workspace's, or one without a workspace_id) cannot be decoded, goes to the dead-letter list
-- with the reason; the record is left as it is. Whatever a claim list still holds goes back to
-- the queue's head, in order.
-- KEYS[8 ..] op markers of this store's earlier calls that have their answer (no re-send of
--   them can come): deleted first, so that markers live only until the store's next call.
for i = 8, #KEYS do redis.call('UNLINK', KEYS[i]) end
local reply
local dead, reaped = {}, {}
local now = now_ms()
local compat = ARGV[10] == '1'
local mode = ''
if compat then
  redis.call('HSETNX', KEYS[7], 'mode', 'shared')
  mode = redis.call('HGET', KEYS[7], 'mode')
end
-- the time to write to a record: in the form its times already have
local function now_of(key) return iso_record(key) and ARGV[9] or ARGV[2] end
local function bury(entry, reason, key, field)
  local letter = {entry = printable(entry), reason = reason, at = tonumber(ARGV[2])}
  if key then letter.key = key; letter.field = field end
  local text = cjson.encode(letter)
  redis.call('LPUSH', KEYS[4], text)
  redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[4]) - 1)
  dead[#dead + 1] = text
end
-- an entry's part before the keys it carries
local function base_of(entry)
  local cut = string.find(entry, '\31', 1, true)
  return cut and string.sub(entry, 1, cut - 1) or entry, cut
end
-- the computed schemas' keys an entry carries, and those the store resolved for it
local function carried_of(entry)
  local keys = {}
  local base, cut = base_of(entry)
  if cut then
    for name, key in string.gmatch(string.sub(entry, cut), '\31([^=\31]+)=([^\31]*)') do
      keys[name] = key
    end
  end
  local resolved, rcut = base_of(ARGV[8])
  if rcut and resolved == base then
    for name, key in string.gmatch(string.sub(ARGV[8], rcut), '\31([^=\31]+)=([^\31]*)') do
      keys[name] = key
    end
  end
  return keys
end
-- workspace id, job id, stamp (false: none) of an entry, or nil after burying it (or, for a
-- bare job id whose job is gone, after dropping it)
local function parse(entry)
  entry = base_of(entry)
  local sep = string.find(entry, ':', 1, true)
  if not sep and compat and is_id(entry) then
    local keyed = false
    for i = 11, #ARGV do
      if string.byte(ARGV[i], 1) ~= 3 and not string.find(ARGV[i], '\1', 1, true) then
        keyed = true
        local key = (string.gsub(ARGV[i], '\2', entry))
        local ws = redis.call('HGET', key, 'workspace_id')
        if ws and is_id(ws) then return ws, entry, false end
        if redis.call('EXISTS', key) == 1 then
          bury(entry, 'its record names no valid workspace_id', key, 'workspace_id')
          return nil
        end
      end
    end
    -- never dropped unseen: without a schema keyed by the id alone, the job cannot be found
    if not keyed then
      bury(entry, 'a bare job id, and no schema keyed by the job id alone is read in this phase')
    end
    return nil  -- keyed, and no record: a deleted job's id, dropped like any such entry
  end
  if not sep then bury(entry, "no ':' between the workspace id and the job id"); return nil end
  local ws, id, stamp = string.sub(entry, 1, sep - 1), string.sub(entry, sep + 1), false
  sep = string.find(id, ':', 1, true)
  if sep then id, stamp = string.sub(id, 1, sep - 1), string.sub(id, sep + 1) end
  if not is_id(ws) then
    bury(entry, 'the workspace id is empty or not 1-128 characters of A-Z a-z 0-9 _ . -')
  elseif not is_id(id) then
    bury(entry, 'the job id is empty or not 1-128 characters of A-Z a-z 0-9 _ . -')
  else
    return ws, id, stamp
  end
  return nil
end
-- the workspace's copies of the job, in read order; nil after burying the entry of a copy that
-- cannot be decoded; nil, true when the entry lacks a computed schema's key
local function copies(entry, ws, id)
  local owned, carried = {}, nil
  for i = 11, #ARGV do
    local key
    if string.byte(ARGV[i], 1) == 3 then
      carried = carried or carried_of(entry)
      key = carried[string.sub(ARGV[i], 2)]
      if not key then return nil, true end
    else
      key = (string.gsub((string.gsub(ARGV[i], '\1', ws)), '\2', id))
    end
    if addressed(key, ws) then
      local field, reason = record_problem(key)
      if field then bury(entry, reason, key, field); return nil end
      owned[#owned + 1] = key
    end
  end
  return owned
end
-- hand the job out to this call: running, attempt n, a claim of its own and its lease
-- The claim names the job as a full entry, 'workspace:job:created_at' (a bare job id's too,
-- with its record's workspace and created_at), so that any later store finds the job again
-- from its lease, with or without the compatible queue, in any phase, on Cluster too.
local function take(owned, entry, n, ws, id)
  local base = base_of(entry)
  if not string.find(base, ':', 1, true) then
    entry = ws .. ':' .. id .. ':' .. (redis.call('HGET', owned[1], 'created_at') or '')
            .. string.sub(entry, #base + 1)
  end
  local claim = ARGV[7] .. ':' .. entry
  for _, key in ipairs(owned) do
    redis.call('HSET', key, 'status', 'running', 'updated_at', now_of(key), '_rev', bump(key),
               'attempts', n, 'claim', claim)
  end
  redis.call('ZADD', KEYS[5], now + tonumber(ARGV[5]), claim)
  local claimed = redis.call('HGETALL', owned[1])
  redis.call('SET', KEYS[3], cjson.encode({owned[1], claimed}), 'EX', ARGV[1])
  return {'job', claimed, dead, owned[1], reaped, '', '', mode}
end
-- A claim list's entries back to the queue's oldest end, in order. A bare job id (moved there
-- from the compatible queue) goes back as a full entry when a schema keyed by the id alone finds
-- its record (as leaving the compatible queue writes it), so that a store without the
-- compatible queue can take it too.
local function requeue(list)
  local rest = redis.call('LRANGE', list, 0, -1)
  for n, item in ipairs(rest) do
    if is_id(item) then
      for i = 11, #ARGV do
        if string.byte(ARGV[i], 1) ~= 3 and not string.find(ARGV[i], '\1', 1, true) then
          local f = redis.call('HMGET', (string.gsub(ARGV[i], '\2', item)), 'workspace_id', 'created_at')
          if f[1] and is_id(f[1]) then rest[n] = f[1] .. ':' .. item .. ':' .. (f[2] or ''); break end
        end
      end
    end
  end
  if #rest > 0 then redis.call('RPUSH', KEYS[2], unpack(rest)) end
  redis.call('DEL', list)
end
-- A re-sent call answers what its first attempt claimed (the marker keeps the record as it was
-- handed out), whatever the key holds now: never a job another worker has since received.
local marker = redis.call('GET', KEYS[3])
if marker then
  local first = cjson.decode(marker)
  reply = {'replayed', first[2], dead, first[1], reaped, '', '', mode}
else
  local expired = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
  for _, member in ipairs(expired) do
    local sep = string.find(member, ':', 1, true) or 0
    local head, entry = string.sub(member, 1, sep - 1), string.sub(member, sep + 1)
    local ws, id = nil, nil
    if head ~= 'list' then ws, id = parse(entry) end
    local owned, need = nil, false
    if ws then owned, need = copies(entry, ws, id) end
    if need then reply = {'need', {}, dead, '', reaped, entry, ws, mode}; break end
    redis.call('ZREM', KEYS[5], member)
    if head == 'list' then
      if entry ~= KEYS[1] then requeue(entry) end
    else
      if owned and #owned > 0 and redis.call('HGET', owned[1], 'claim') == member
          and redis.call('HGET', owned[1], 'status') == 'running' then
        local n = attempts_of(owned[1])
        if n >= tonumber(ARGV[6]) then
          local why = 'lease expired on attempt ' .. n .. ' of ' .. ARGV[6]
                      .. ' (max_attempts): the worker holding the job stopped renewing it'
          for _, key in ipairs(owned) do
            redis.call('HSET', key, 'status', 'failed', 'error', why, 'updated_at', now_of(key),
                       '_rev', bump(key), 'claim', '')  -- the claim ended: LeaseLost for it
          end
          reaped[#reaped + 1] = 'failed'; reaped[#reaped + 1] = ws
        else
          reaped[#reaped + 1] = 'reclaimed'; reaped[#reaped + 1] = ws
          reply = take(owned, entry, n + 1, ws, id)
          break
        end
      end
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
  local owned, need = nil, false
  if ws then owned, need = copies(entry, ws, id) end
  if need then  -- back where it was, at the oldest end; the store resolves its keys
    redis.call(back, from, entry)
    reply = {'need', {}, dead, '', reaped, entry, ws, mode}
    break
  end
  if owned and #owned > 0 and redis.call('HGET', owned[1], 'status') == 'pending'
      and (not stamp or redis.call('HGET', owned[1], 'created_at') == stamp) then
    reply = take(owned, entry, attempts_of(owned[1]) + 1, ws, id)
    break
  end
end
if KEYS[1] ~= KEYS[2] and not (reply and reply[1] == 'need') then
  requeue(KEYS[1])
  redis.call('ZREM', KEYS[5], 'list:' .. KEYS[1])
end
return reply or {'busy', {}, dead, '', reaped, '', '', mode}
""",
)

# Leaving the compatible queue: its pending ids move into jobstore's own queue, as full entries.
LEAVE_LEGACY_QUEUE = Lua(
    "leave_legacy_queue",
    r"""
-- KEYS[1] the compatible queue   KEYS[2] jobstore's queue   KEYS[3] queue mode hash
-- ARGV[1] most ids to move   ARGV[2 ..] record key templates of the schemas keyed by the job id
--         alone (byte 2 stands for the job id)
-- returns {moved, dropped (no record: a deleted job), left in the compatible queue}
-- Sets the mode to 'left' first: from then on every enqueue pushes to jobstore's queue, and every
-- dequeue still drains what remains here. Newest first onto the queue's oldest end, so that the
-- order is kept and the moved ids come out before any job enqueued since. Each call is atomic:
-- an id is moved once, and a run cut off anywhere is finished by running it again.
redis.call('HSET', KEYS[3], 'mode', 'left')
local moved, dropped = 0, 0
for _ = 1, tonumber(ARGV[1]) do
  local id = redis.call('RPOP', KEYS[1])
  if not id then break end
  local entry = nil
  for i = 2, #ARGV do
    local record = redis.call('HMGET', (string.gsub(ARGV[i], '\2', id)), 'workspace_id', 'created_at')
    if record[1] and record[1] ~= '' then
      entry = record[1] .. ':' .. id .. ':' .. (record[2] or '')
      break
    end
  end
  if entry and not string.find(id, ':', 1, true) then
    redis.call('RPUSH', KEYS[2], entry)
    moved = moved + 1
  elseif string.find(id, ':', 1, true) then
    redis.call('RPUSH', KEYS[2], id)  -- already a jobstore entry
    moved = moved + 1
  else
    dropped = dropped + 1
  end
end
return {moved, dropped, redis.call('LLEN', KEYS[1])}
""",
)


# A dequeue about to move queue entries into its claim list registers the list first, as a lease:
# if the dequeue never finishes (its process died), a later dequeue puts the entries back.
LEASE_LIST = Lua(
    "lease_list",
    LEASE + r"""
-- KEYS[1] leases   ARGV[1] claim list   ARGV[2] how long it may stay (ms)
redis.call('ZADD', KEYS[1], now_ms() + tonumber(ARGV[2]), 'list:' .. ARGV[1])
return 1
""",
)

# Redis Cluster: the move from the queue to the claim list, registered as above, in one step.
TAKE = Lua(
    "take",
    LEASE + r"""
-- KEYS[1] queue   KEYS[2] claim list   KEYS[3] leases
-- ARGV[1] how long the claim list may stay (ms)   ARGV[2] most expired leases to look at
-- returns {entry moved or false (the queue is empty), then each expired claim
--          ('<token>:<entry>', oldest first) and how long ago its lease ran out (ms)}
-- One step for a dequeue: the leases that ran out (claim lists of dequeues that died go back to
-- the queue here; the jobs of expired claims sit in other slots, the caller takes them over),
-- and the oldest entry into this call's claim list, leased like any claim list.
local now = now_ms()
local out = {false}
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2] or '0'))
for _, member in ipairs(expired) do
  if string.sub(member, 1, 5) == 'list:' then
    local list = string.sub(member, 6)
    local rest = redis.call('LRANGE', list, 0, -1)
    if #rest > 0 then redis.call('RPUSH', KEYS[1], unpack(rest)) end
    redis.call('DEL', list)
    redis.call('ZREM', KEYS[3], member)
  else
    out[#out + 1] = member
    out[#out + 1] = tostring(now - tonumber(redis.call('ZSCORE', KEYS[3], member)))
  end
end
local entry = redis.call('RPOP', KEYS[1])
if entry then
  redis.call('LPUSH', KEYS[2], entry)
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[1]), 'list:' .. KEYS[2])
  out[1] = entry
end
return out
""",
)

EXTEND = fenced(
    "extend",
    RECORD_CHECK + LEASE + r"""
-- KEYS[1] leases   KEYS[2 ..] the job's record keys, in read order (none: Redis Cluster, where
--   the caller read them first, and they sit in other slots)
-- ARGV[1] claim   ARGV[2] lease (ms, from now)   ARGV[3] workspace id
-- returns the new expiry (ms, server time) | 0 the claim has ended (taken over, finished, failed,
--   cancelled, deleted, or the id enqueued again: a record that is not running under this claim)
-- A lease that ran out but whose job no one has taken over yet is renewed: the claim stands
-- until another dequeue takes the job. The lease of a claim that has ended is dropped.
local held = #KEYS == 1
for i = 2, #KEYS do
  if addressed(KEYS[i], ARGV[3]) then  -- the first copy in read order decides, as for updates
    held = redis.call('HGET', KEYS[i], 'claim') == ARGV[1]
           and redis.call('HGET', KEYS[i], 'status') == 'running'
    break
  end
end
if not held then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
local until_ms = now_ms() + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], 'XX', until_ms, ARGV[1])
return until_ms
""",
)

# Redis Cluster: a claim is leased before its records move (a dequeue that dies between the two
# leaves a lease that runs out and is dropped: the job was never taken).
LEASE_CLAIM = Lua(
    "lease_claim",
    LEASE + r"""
-- KEYS[1] leases   ARGV[1] claim   ARGV[2] lease (ms)
redis.call('ZADD', KEYS[1], now_ms() + tonumber(ARGV[2]), ARGV[1])
return 1
""",
)

# Redis Cluster: who claims a job whose queue entry might be duplicated. The arbiter names the
# winning claim and when it won: a claim that won long ago and never moved the job (its dequeue
# died in between) can be replaced, so that the job is not stranded.
ARBITRATE = Lua(
    "arbitrate",
    LEASE + r"""
-- KEYS[1] the job's arbiter   ARGV[1] this call's claim   ARGV[2] ttl (s)
-- ARGV[3] the holder to replace ('' none: only an absent arbiter is taken)
-- returns {'won'} | {'held', holder, how long ago it won (ms)}
local now = now_ms()
local held = redis.call('GET', KEYS[1])
if held then
  local holder, at = string.match(held, '^(.*)|(%d+)$')
  holder = holder or held
  if holder == ARGV[1] then return {'won'} end
  if ARGV[3] == '' or holder ~= ARGV[3] then
    return {'held', holder, tostring(now - (tonumber(at) or 0))}
  end
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. now, 'EX', ARGV[2])
return {'won'}
""",
)


SYNC_RECORD = Lua(
    "sync_record",
    RULES + TIME + r"""
-- KEYS[1] 'from' record   KEYS[2] 'to' record   KEYS[3] workspace index
-- ARGV[1] workspace id   ARGV[2] job id   ARGV[3] mode 'copy' | 'merge'   ARGV[4] '1' dry run
-- ARGV[5] '1' when 'to' wins a conflict (equal write counts): the copy the phase reads first
-- returns 'copied' | 'refreshed' | 'copied-back' | 'merged' | 'same' | 'exists' | 'gone'
--         | 'foreign' | 'not_a_record' (a key that is not a hash: nothing done)
-- The decision is jobstore.rules' decide_sync (see there): which copy is newer is decided by
-- the records' write counts, never by a client's clock. A record deleted meanwhile is never
-- revived (both copies are read here, at one instant). Only records owned by the workspace
-- are touched. A copy to a missing record keeps the TTL of the record it copies.
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
  local fresh = redis.call('EXISTS', key) == 0
  hset_record(key, record)
  if fresh and ttl_of then
    local ttl = redis.call('PTTL', ttl_of)
    if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
  end
  redis.call('ZADD', KEYS[3], 'NX', to_epoch(record['created_at']) or 0, ARGV[2])
end
if new_from then write(KEYS[1], new_from, KEYS[2]) end
if new_to then write(KEYS[2], new_to, KEYS[1]) end
return outcome
""",
)

CLEANUP_RECORD = Lua(
    "cleanup_record",
    RULES + r"""
-- KEYS[1] source record   KEYS[2] target record
-- ARGV[1] workspace id   ARGV[2] '1' dry run
-- returns 'deleted' | 'kept' (no target copy, or not the same record) | 'gone' | 'foreign'
--         | 'not_a_record'
-- The same record: jobstore.rules' same_record (the target holds every source field with the
-- same value, except the mutable ones when the target's write count is at least the source's).
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
""",
)

# The passes on standalone Redis, for schemas with a key format: one call settles a chunk of
# scanned keys, placement included (the other copy's key and the index key are the schemas'
# templates with the ids substituted, as DEQUEUE does), each record read once and nothing
# re-read after it is written. Per record it decides exactly as SYNC_RECORD, CLEANUP_RECORD
# and verify's comparison do (jobstore.rules), at one instant per record. A key of another type
# is found by the read itself (redis.pcall), and a write Redis refuses is that record's 'error':
# the chunk goes on with the next record. Computed schemas and Redis Cluster keep the per-record
# forms (jobstore.migration, jobstore.sync_cluster).
PASS_BATCH = Lua(
    "pass_batch",
    RULES + TIME + r"""
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
--   other kind ('missing', 'differing', 'target_newer', 'orphaned'), records as flat lists
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
local function valid_id(v)
  return v ~= nil and #v >= 1 and #v <= 128 and string.match(v, '^[A-Za-z0-9_.%-]+$') ~= nil
end
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
      if valid_id(middle) then return '', middle end
      return nil
    end
    local at = string.find(middle, sep, 1, true)
    if not at then return nil end
    local a, b = string.sub(middle, 1, at - 1), string.sub(middle, at + #sep)
    if not valid_id(a) or not valid_id(b) then return nil end
    if w < j then return a, b end
    return b, a
  end
end
local function failed(reply) return type(reply) == 'table' and reply['err'] ~= nil end
-- a record and its flat form; nil for a key of another type
local function read(key)
  local flat = redis.pcall('HGETALL', key)
  if flat['err'] then return nil, nil end
  local record = {}
  for i = 1, #flat, 2 do record[flat[i]] = flat[i + 1] end
  return record, flat
end
local function identity_same(a, b)
  for k, v in pairs(a) do if not MUTABLE[k] and b[k] ~= v then return false end end
  for k, v in pairs(b) do if not MUTABLE[k] and a[k] ~= v then return false end end
  return true
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
local function write(i, key, record, flat, fresh, ttl_of, ws, job)
  if not flat then
    flat = {}
    for k, v in pairs(record) do flat[#flat + 1] = k; flat[#flat + 1] = v end
  end
  if not hset_flat_checked(key, flat) then return false end
  if fresh then
    local ttl = redis.pcall('PTTL', ttl_of)
    if not failed(ttl) and ttl > 0 and failed(redis.pcall('PEXPIRE', key, ttl)) then return false end
  end
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
    if not valid_id(owner) then return '-unroutable' end
    ws = owner
  elseif owner ~= ws then
    return '-'
  end
  local other_key = other_key_of(ws, job)
  if redis.pcall('HGET', other_key, 'workspace_id') == ws then return 'same' end
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
    if not valid_id(ws) then return '-unroutable' end
  end
  local other_key = other_key_of(ws, job)
  if mode == 'source' then
    if mine['workspace_id'] ~= ws then return '-' end
    local theirs, theirs_flat = read(other_key)
    local kind
    if theirs == nil or theirs['workspace_id'] ~= ws then
      kind = 'missing'
    elseif same_content(mine, theirs) then
      return 'same'
    elseif identity_same(mine, theirs) and newer(theirs, mine) then
      kind = 'target_newer'
    else
      kind = 'differing'
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
  if new_from and not write(i, key, new_from, nil, is_empty(mine), other_key, ws, job) then
    return 'error'
  end
  -- a plain copy writes the record as it was read
  if new_to and not write(i, other_key, new_to, new_to == mine and mine_flat or nil, is_empty(theirs),
                          key, ws, job) then
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
""",
)

SET_STATE = Lua(
    "set_state",
    r"""
-- KEYS[1] migration state hash   KEYS[2] migration log list
-- ARGV[1] the phase the caller based its decision on ('' when none was stored)
-- ARGV[2] the phase_since it based it on ('' = any)   ARGV[3] log entry (JSON, '' = none)
-- ARGV[4 ..] field, value pairs to set (only the fields this change sets)
-- returns 1 written | 0 the stored phase changed meanwhile (nothing written)
-- Compare-and-set, so two operators switching at once cannot both win, and a change writes only
-- its own fields: a verify's or a reverse sync's record written meanwhile is never wiped.
local current = redis.call('HGET', KEYS[1], 'phase') or ''
if current ~= ARGV[1] then return 0 end
if ARGV[2] ~= '' and (redis.call('HGET', KEYS[1], 'phase_since') or '') ~= ARGV[2] then return 0 end
if #ARGV >= 5 then
  local fields = {}
  for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
  redis.call('HSET', KEYS[1], unpack(fields))
end
if ARGV[3] ~= '' then
  redis.call('LPUSH', KEYS[2], ARGV[3])
  redis.call('LTRIM', KEYS[2], 0, 999)
end
return 1
""",
)

# Verify's evidence for the gates (jobstore.phases.MigrationState.vouched): one counter in the
# state hash orders every verify's start and every failing verify's end, so that "the newest
# verify" never depends on a clock's resolution or steps.
VERIFY_TICKET = Lua(
    "verify_ticket",
    r"""
-- KEYS[1] migration state hash
-- returns the ticket of a verify starting now (1, 2, ...), or 0 when no phase is stored (the
-- verify's result will not be recorded; writing would store the default phase as a side effect)
if not redis.call('HGET', KEYS[1], 'phase') then return 0 end
return redis.call('HINCRBY', KEYS[1], 'verify_ticket', 1)
""",
)

RECORD_VERIFY_FAILED = Lua(
    "record_verify_failed",
    r"""
-- KEYS[1] migration state hash
-- ARGV[1] when the verify finished (the migration's clock, epoch seconds)   ARGV[2] what it found
-- returns the ticket recorded as failed_ticket, or 0 when no phase is stored (nothing written)
-- Evidence against the target is recorded whatever phase switch happened meanwhile (it can only
-- keep a gate shut), with a ticket taken now, so it is newer than every verify that started
-- before this one finished: none of them counts as clean any more. A re-sent call takes another
-- ticket, newer still: the same evidence, recorded again.
if not redis.call('HGET', KEYS[1], 'phase') then return 0 end
local ticket = redis.call('HINCRBY', KEYS[1], 'verify_ticket', 1)
redis.call('HSET', KEYS[1], 'failed_ticket', ticket, 'verify_failed', ARGV[1],
           'verify_failed_note', ARGV[2])
return ticket
""",
)

# Unroutable source records (no usable workspace_id) set aside by ``jobstore migrate set-aside``:
# renamed, in their own slot, to a key outside every schema's namespace, bytes and TTL intact.
SET_ASIDE = Lua(
    "set_aside",
    r"""
-- KEYS[1] the source record   KEYS[2] where it goes (StoreKeys.aside: the same slot)
-- ARGV[1] '1' the record names its workspace (the key does not): set aside only while that is
--         missing or unusable; '0' the key's own workspace id is unusable
-- ARGV[2] '1' dry run
-- returns 'set-aside' (also for a re-sent call: the record is where this call put it)
--       | 'gone' deleted meanwhile | 'routable' it names a usable workspace now: left
--       | 'not_a_record' another type: left | 'busy' KEYS[2] holds another record: left
if redis.call('EXISTS', KEYS[2]) == 1 then
  if redis.call('EXISTS', KEYS[1]) == 0 then return 'set-aside' end
  return 'busy'
end
local kind = redis.call('TYPE', KEYS[1]).ok
if kind == 'none' then return 'gone' end
if kind ~= 'hash' then return 'not_a_record' end
if ARGV[1] == '1' then
  local ws = redis.call('HGET', KEYS[1], 'workspace_id')
  if ws and #ws >= 1 and #ws <= 128 and string.match(ws, '^[A-Za-z0-9_.%-]+$') then
    return 'routable'
  end
end
if ARGV[2] ~= '1' then redis.call('RENAME', KEYS[1], KEYS[2]) end
return 'set-aside'
""",
)

RESTORE_ASIDE = Lua(
    "restore_aside",
    r"""
-- KEYS[1] a record set aside (StoreKeys.aside)   KEYS[2] the key it was set aside from
-- returns 'restored' | 'occupied' KEYS[2] holds a record again: nothing changed
--       | 'in-place' nothing is set aside there and KEYS[2] holds a record (restored already,
--         e.g. by this call sent again) | 'absent' nothing is set aside there
if redis.call('EXISTS', KEYS[1]) == 0 then
  if redis.call('EXISTS', KEYS[2]) == 1 then return 'in-place' end
  return 'absent'
end
if redis.call('EXISTS', KEYS[2]) == 1 then return 'occupied' end
redis.call('RENAME', KEYS[1], KEYS[2])
return 'restored'
""",
)

# -- Redis Cluster: one script per slot -----------------------------------------------------------
# Keys of a job live in several slots there (each record, the index, the queue), so an operation
# is a sequence of single-slot scripts in a fixed order; docs/cluster.md states the guarantees.

CREATE_RECORD = Lua(
    "create_record",
    r"""
-- KEYS[1] record   KEYS[2] the record's tombstone (DELETE_RECORD)
-- ARGV[1] this call's token (the record's '_op' field too, among the pairs)
-- ARGV[2] the incarnation, 'workspace:created_at'   ARGV[3 ..] field, value pairs
-- returns {'created'} | {'replayed'} | {'exists', record}
-- No marker key: the record names the call that created it, and a delete names the incarnations
-- it deleted in the tombstone (a new incarnation is never among them), so a re-sent call
-- recognises its first attempt even when the job was deleted in between.
if redis.pcall('HGET', KEYS[1], '_op') == ARGV[1] or redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then
  return {'replayed'}
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists', redis.call('HGETALL', KEYS[1])} end
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
return {'created'}
""",
)

PUSH_ONCE = Lua(
    "push_once",
    r"""
-- KEYS[1] op marker   KEYS[2] queue   KEYS[3 ..] markers of earlier pushes that have their
--   answer (no re-send of them can come): deleted here, so a finished enqueue leaves no key
-- ARGV[1] marker ttl (s)   ARGV[2] entry
-- returns 1 pushed | 0 this call's entry was pushed already
for i = 3, #KEYS do redis.call('UNLINK', KEYS[i]) end
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
-- ARGV[1] workspace id   ARGV[2] marker ttl (s)   ARGV[3] tombstone ttl (s)
-- ARGV[4 ..] stamps (created_at) of the job's records the delete found, in any slot
-- returns 1 deleted (now or by this call's earlier attempt) | 0 not there
-- Leaves a tombstone unless the key holds another workspace's record, so that no copy or repair
-- running beside the delete can bring the record back. The tombstone names what was deleted,
-- 'workspace:created_at' per deleted incarnation of the id, never a time: a job enqueued again
-- under the same id later is another incarnation and is not stopped, whatever any clock says.
if redis.call('EXISTS', KEYS[1]) == 1 then return 1 end
local owner = redis.call('HGET', KEYS[2], 'workspace_id')
if owner and owner ~= ARGV[1] then return 0 end
local stamps = {}
for i = 4, #ARGV do stamps[#stamps + 1] = ARGV[1] .. ':' .. ARGV[i]; stamps[#stamps + 1] = '1' end
if owner then
  stamps[#stamps + 1] = ARGV[1] .. ':' .. (redis.call('HGET', KEYS[2], 'created_at') or '')
  stamps[#stamps + 1] = '1'
end
if #stamps > 0 then
  redis.call('HSET', KEYS[3], unpack(stamps))
  redis.call('EXPIRE', KEYS[3], ARGV[3])
end
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
-- ARGV[1] workspace id   ARGV[2] marker ttl (s)   ARGV[3 ..] field, value pairs, status among them
-- returns 'done' | 'missing' | 'newer' (the copy already took this move or a later one: left alone)
-- Writes reach the copies one after another, so a late one must not undo a later one. Every
-- allowed move raises the status (pending < running < terminal), or, for a running job handed
-- out again, its attempt count: a copy already as far along took a later move
-- (jobstore.rules.moved_past). No clock is consulted.
if redis.call('EXISTS', KEYS[1]) == 1 then return 'done' end
if redis.call('HGET', KEYS[2], 'workspace_id') ~= ARGV[1] then return 'missing' end
local rank = {pending = 0, running = 1, completed = 2, failed = 2, cancelled = 2}
local function count(v)
  if v and #v <= 15 and string.match(v, '^%d+$') then return tonumber(v) end
  return 0
end
local fields, status, attempts = {}, nil, nil
for i = 3, #ARGV, 2 do
  fields[#fields + 1] = ARGV[i]; fields[#fields + 1] = ARGV[i + 1]
  if ARGV[i] == 'status' then status = ARGV[i + 1] end
  if ARGV[i] == 'attempts' then attempts = count(ARGV[i + 1]) end
end
local current = redis.call('HGET', KEYS[2], 'status') or ''
local was, new = rank[current] or -1, rank[status or ''] or 99
-- a later hand-out of a running job (a lease taken over) is a move too: its attempt is higher
-- (every mirror carries the first copy's claim and attempts as they are after its move, so a
-- later move's mirror has brought them already)
if was > new or (was == new and (attempts or 0) <= count(redis.call('HGET', KEYS[2], 'attempts'))) then
  return 'newer'
end
local v = redis.call('HGET', KEYS[2], '_rev')
v = (v and #v <= 15 and string.match(v, '^%d+$')) and tonumber(v) + 1 or 1
redis.call('HSET', KEYS[2], '_rev', v, unpack(fields))
redis.call('SET', KEYS[1], '1', 'EX', ARGV[2])
return 'done'
""",
)

RETURN_CLAIMS = Lua(
    "return_claims",
    r"""
-- KEYS[1] claim list   KEYS[2] queue   KEYS[3] leases
-- returns how many entries went back to the queue's head (oldest end), in order
local rest = redis.call('LRANGE', KEYS[1], 0, -1)
if #rest > 0 then redis.call('RPUSH', KEYS[2], unpack(rest)) end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[3], 'list:' .. KEYS[1])
return #rest
""",
)

BURY = Lua(
    "bury",
    r"""
-- KEYS[1] op marker   KEYS[2] dead-letter list
-- ARGV[1] marker ttl (s)   ARGV[2] dead letter (JSON)   ARGV[3] most dead letters kept
-- returns 1 written | 0 this call's letter was written already
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
return 1
""",
)

COPY_IF_ABSENT = Lua(
    "copy_if_absent",
    TIME + r"""
-- KEYS[1] record to write   KEYS[2] its tombstone   KEYS[3] the workspace index (or any key
--         of this slot, when the index lives elsewhere)
-- ARGV[1] job id   ARGV[2] ttl in ms (0: none)   ARGV[3] '1' to add to the index
-- ARGV[4] created_at   ARGV[5] workspace id   ARGV[6 ..] field, value pairs
-- returns 'copied' | 'exists' | 'tombstoned' (this incarnation was deleted: not brought back)
--         | 'not_a_record'
if redis.call('HEXISTS', KEYS[2], ARGV[5] .. ':' .. ARGV[4]) == 1 then return 'tombstoned' end
local kind = redis.call('TYPE', KEYS[1]).ok
if kind ~= 'none' then return kind == 'hash' and 'exists' or 'not_a_record' end
for i = 6, #ARGV, 1000 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if ARGV[3] == '1' then redis.call('ZADD', KEYS[3], 'NX', to_epoch(ARGV[4]) or 0, ARGV[1]) end
return 'copied'
""",
)

WRITE_IF_UNCHANGED = Lua(
    "write_if_unchanged",
    r"""
-- KEYS[1] record
-- ARGV[1] 'delete' | 'write'   ARGV[2] n: how many field, value pairs the record had when read
-- ARGV[3 .. 2+2n] those pairs   ARGV[3+2n ..] field, value pairs to write (write)
-- returns 'done' | 'changed' (it is not exactly as it was read: nothing done)
-- Compares the whole record, not a time or a counter: a write by any tool counts as a change.
local n = tonumber(ARGV[2])
if redis.call('HLEN', KEYS[1]) ~= n then return 'changed' end
for i = 3, 2 + 2 * n, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) ~= ARGV[i + 1] then return 'changed' end
end
if ARGV[1] == 'delete' then redis.call('DEL', KEYS[1]); return 'done' end
for i = 3 + 2 * n, #ARGV, 1000 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
return 'done'
""",
)

READ_FIRST = Lua(
    "read_first",
    r"""
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
""",
)

READ_RECORDS = Lua(
    "read_records",
    r"""
-- KEYS[1 ..] record keys   returns the HGETALL of each, read at one instant (standalone only:
-- verify compares a record with its counterpart, and a write between two reads is no difference)
-- A key holding another type reads as {'\0not-a-hash', type}: reported, never an error.
local out = {}
for i = 1, #KEYS do
  local kind = redis.call('TYPE', KEYS[i]).ok
  if kind == 'hash' or kind == 'none' then
    out[i] = redis.call('HGETALL', KEYS[i])
  else
    out[i] = {'\0not-a-hash', kind}
  end
end
return out
""",
)

ALL = (ENQUEUE, UPDATE_STATUS, DELETE, DEQUEUE, LEAVE_LEGACY_QUEUE, ARBITRATE, LEASE_LIST, TAKE,
       EXTEND, LEASE_CLAIM, SYNC_RECORD, CLEANUP_RECORD, SET_STATE, CREATE_RECORD,
       PUSH_ONCE, DELETE_RECORD, MIRROR, RETURN_CLAIMS, BURY, COPY_IF_ABSENT, WRITE_IF_UNCHANGED,
       READ_RECORDS, PASS_BATCH, READ_FIRST, VERIFY_TICKET, RECORD_VERIFY_FAILED, SET_ASIDE,
       RESTORE_ASIDE)
