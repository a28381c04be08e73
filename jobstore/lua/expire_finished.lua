-- KEYS[1] a job record
-- ARGV[1] its workspace id   ARGV[2] the retention to give it (ms): the sweep's finished_ttl
-- returns 1 when it now expires, else 0 (not the workspace's, not final, or it has an expiry)
-- For jobs that finished without a retention (before one was configured): the record's own
-- _ttl (its enqueue's) wins over ARGV[2]. Safe to re-send: a record that expires is left alone.
--- @include "retention"
if redis.call('PTTL', KEYS[1]) ~= -1 then return 0 end
local f = redis.call('HMGET', KEYS[1], 'workspace_id', 'status', {{ TTL }})
if f[1] ~= ARGV[1] then return 0 end
local at = expiry_of({[{{ TTL }}] = f[3]}, f[2] or '', '', ARGV[2])
expire_all({KEYS[1]}, at)
return at and 1 or 0
