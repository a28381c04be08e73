-- KEYS[1] op marker   KEYS[2] dead-letter list
-- ARGV[1] marker ttl (s)   ARGV[2] dead letter (JSON)   ARGV[3] most dead letters kept
-- returns 1 written | 0 this call's letter was written already
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
return 1
