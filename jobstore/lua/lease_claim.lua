-- Redis Cluster: a claim is leased before its records move (a dequeue that dies between the two
-- leaves a lease that runs out and is dropped: the job was never taken).
-- KEYS[1] leases   ARGV[1] claim   ARGV[2] lease (ms)
-- returns 1
--- @include "lease"
redis.call('ZADD', KEYS[1], now_ms() + tonumber(ARGV[2]), ARGV[1])
return 1
