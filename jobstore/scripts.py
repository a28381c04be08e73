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


ENQUEUE = Lua(
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
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
redis.call('LPUSH', KEYS[3], ARGV[5])
redis.call('SET', KEYS[1], '1', 'EX', ARGV[2])
return {'created'}
""",
)

UPDATE_STATUS = Lua(
    "update_status",
    r"""
-- KEYS[1] op marker   KEYS[2 ..] record keys, in read order
-- ARGV[1] workspace id   ARGV[2] marker ttl (s)   ARGV[3] statuses allowed before, ' '-separated
-- ARGV[4 ..] field, value pairs to set
-- returns {'updated', record} | {'replayed', record} | {'missing'} | {'invalid', current status}
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
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
for _, key in ipairs(owned) do redis.call('HSET', key, unpack(fields)) end
redis.call('SET', KEYS[1], '1', 'EX', ARGV[2])
return {'updated', redis.call('HGETALL', owned[1])}
""",
)

DELETE = Lua(
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

DEQUEUE = Lua(
    "dequeue",
    r"""
-- KEYS[1] list to pop from: the queue, or this call's claim list   KEYS[2] the queue
-- KEYS[3] op marker
-- ARGV[1] marker ttl (s)   ARGV[2] now   ARGV[3] most entries to examine
-- ARGV[4 ..] record key templates in read order; byte 1 stands for the workspace id, byte 2
--            for the job id (the schemas' lua_template)
-- returns {'job', record} | {'replayed', record} | {'empty'} | {'busy'}
-- Entries are 'workspace:job'. Entries of deleted, cancelled or already running jobs are
-- dropped. Whatever a claim list still holds goes back to the queue's head, in order.
local marker = redis.call('GET', KEYS[3])
if marker then return {'replayed', redis.call('HGETALL', marker)} end
local reply = {'empty'}
for _ = 1, tonumber(ARGV[3]) do
  local entry = redis.call('RPOP', KEYS[1])
  if not entry then break end
  reply = {'busy'}
  local sep = string.find(entry, ':', 1, true)
  local ws, id = string.sub(entry, 1, sep - 1), string.sub(entry, sep + 1)
  local owned = {}
  for i = 4, #ARGV do
    local key = (string.gsub((string.gsub(ARGV[i], '\1', ws)), '\2', id))
    if redis.call('HGET', key, 'workspace_id') == ws then owned[#owned + 1] = key end
  end
  if #owned > 0 and redis.call('HGET', owned[1], 'status') == 'pending' then
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
return reply
""",
)

ALL = (ENQUEUE, UPDATE_STATUS, DELETE, DEQUEUE)
