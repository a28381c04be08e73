-- Redis Cluster: a dequeue has claimed a job; the mark its re-send recognises (TAKE), written
-- with the step that ends the claim's hold, in one script.
-- KEYS[1] this call's op marker   KEYS[2] claim list   KEYS[3] leases
-- ARGV[1] marker ttl (s)   ARGV[2] the entry of the job claimed
-- ARGV[3] '' the entry came through the claim list (it leaves the list), else the expired claim
--         the job was taken over from (its lease is dropped)
-- returns 1
if ARGV[3] == '' then
  redis.call('LREM', KEYS[2], -1, ARGV[2])
else
  redis.call('ZREM', KEYS[3], ARGV[3])
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[1])
return 1
