-- Verify's evidence for the gates (jobstore.phases.MigrationState.vouched): one counter in the
-- state hash orders every verify's start and every failing verify's end, so that "the newest
-- verify" never depends on a clock's resolution or steps.
-- KEYS[1] migration state hash
-- returns the ticket of a verify starting now (1, 2, ...), or 0 when no phase is stored (the
-- verify's result will not be recorded; writing would store the default phase as a side effect)
if not redis.call('HGET', KEYS[1], 'phase') then return 0 end
return redis.call('HINCRBY', KEYS[1], 'verify_ticket', 1)
