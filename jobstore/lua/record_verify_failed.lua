-- KEYS[1] migration state hash
-- ARGV[1] when the verify finished (the migration's clock, epoch seconds)   ARGV[2] what it found
-- returns the ticket recorded as failed_ticket, or 0 when no phase is stored (nothing written)
-- Evidence against the target is recorded whatever phase switch happened meanwhile (it can only
-- keep a gate shut), with a ticket taken now, so it is newer than every verify that started
-- before this one finished: none of them counts as clean any more. A re-sent call takes another
-- ticket, newer still: the same evidence, recorded again.
if not redis.call('HGET', KEYS[1], 'phase') then return 0 end
local ticket = redis.call('HINCRBY', KEYS[1], 'verify_ticket', 1)
redis.call('HSET', KEYS[1], 'failed_ticket', ticket, 'verify_failed', ARGV[1],
           'verify_failed_note', ARGV[2])
return ticket
