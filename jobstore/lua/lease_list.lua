-- A dequeue about to move queue entries into its claim list registers the list first, as a lease:
-- if the dequeue never finishes (its process died), a later dequeue puts the entries back.
-- KEYS[1] leases   ARGV[1] claim list   ARGV[2] how long it may stay (ms)
-- returns 1
--- @include "lease"
redis.call('ZADD', KEYS[1], now_ms() + tonumber(ARGV[2]), list_lease(ARGV[1]))
return 1
