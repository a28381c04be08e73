-- Fenced (includes/fence.lua): the call's KEYS[1], ARGV[1] and ARGV[2] are the fence's,
-- dropped before the lines below run; the indices below are those left.
-- Any number of jobs in one call (enqueue: one; enqueue_many: a chunk of its batch), each
-- written with its index and queue entry, or not at all, whatever happens to the others.
-- KEYS[1] queue   KEYS[2] the compatible queue   KEYS[3] its mode hash (with ARGV[1] '1'; else
--   any keys)   then per job: its tombstone (see DELETE), its workspace index, the record keys
--   to write, the record keys that must not exist either
-- ARGV[1] '1': a compatible queue is configured   ARGV[2] number of jobs   then per job: number
--   of keys to write, number of keys to check, this call's token (the record's '_op' field
--   too, among the pairs), job id, index score (created_at), queue entry, number of field and
--   value strings, the record's field, value pairs
-- returns per job 'created' | 'replayed' (this call's own earlier attempt created the job:
--   the caller answers with the job it sent, never with what the key holds now) | 'exists'
--   | {'error', message} (Redis refused a write: nothing of that job is left): the words
--   alone, space-separated in one string (one line for the client to read, not one per job),
--   unless a job was refused; then a list of them, a word or {'error', message} per job
-- No marker key: the record names the call that created it ('_op'), and a delete keeps the
-- tokens of what it deleted in the job's tombstone for the marker ttl, so that a re-sent call
-- recognises its first attempt even when that job was run and deleted in between.
-- With a compatible queue (the replaced system's list of bare job ids), jobs are RPUSHed there
-- as its producers do, until the queue mode says the fleet has left it; then to jobstore's own.
--- @include "fence"
local shared = false
if ARGV[1] == '1' then
  redis.call('HSETNX', KEYS[3], 'mode', 'shared')
  shared = redis.call('HGET', KEYS[3], 'mode') ~= 'left'
end
local function enqueue_one(tomb, index, first, writes, last, token, id, score, entry, p1, p2)
  -- No record key and no tombstone (a new id, the common case): one command says so.
  if redis.call('EXISTS', tomb, unpack(KEYS, first, last)) > 0 then
    if redis.pcall('HGET', KEYS[first], '_op') == token or redis.call('HEXISTS', tomb, token) == 1 then
      return 'replayed'
    end
    for i = first, last do
      if redis.call('EXISTS', KEYS[i]) == 1 then return 'exists' end
    end
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
  return 'created'
end
local out, k, a, refused = {}, 4, 3, false
for j = 1, tonumber(ARGV[2]) do
  local nw, nc, np = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 6])
  out[j] = enqueue_one(KEYS[k], KEYS[k + 1], k + 2, k + 1 + nw, k + 1 + nw + nc, ARGV[a + 2],
                       ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], a + 7, a + 6 + np)
  refused = refused or type(out[j]) == 'table'
  k, a = k + 2 + nw + nc, a + 7 + np
end
if refused then return out end
return table.concat(out, ' ')
