-- KEYS[1] claim list   KEYS[2] queue   KEYS[3] leases
-- returns how many entries went back to the queue's head (oldest end), in order
--- @include "lease"
local n = return_list(KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], list_lease(KEYS[1]))
return n
