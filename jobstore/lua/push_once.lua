-- KEYS[1] op marker   KEYS[2] queue   KEYS[3 ..] markers of earlier pushes that have their
--   answer (no re-send of them can come): deleted here, so a finished enqueue leaves no key
-- ARGV[1] marker ttl (s)   ARGV[2] entry
-- returns 1 pushed | 0 this call's entry was pushed already
for i = 3, #KEYS do redis.call('UNLINK', KEYS[i]) end
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
return 1
