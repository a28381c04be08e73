-- KEYS[1] claim list   KEYS[2] queue   KEYS[3] leases
-- returns how many entries went back to the queue's head (oldest end), in order
local rest = redis.call('LRANGE', KEYS[1], 0, -1)
if #rest > 0 then redis.call('RPUSH', KEYS[2], unpack(rest)) end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[3], 'list:' .. KEYS[1])
return #rest
