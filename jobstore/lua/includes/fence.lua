-- Prepended to every script that acts for a routed operation (the caller: jobstore.ops.calls.fenced).
-- A store routes by the migration phase it cached (at most a second old); the script re-checks
-- that phase in the same atomic step, so no write ever lands under a phase that has since changed:
-- a stale store is told 'stale', refreshes, and routes again. The prelude then drops its own
-- KEYS/ARGV, so the including script's header describes the indices that are left.
-- fence: KEYS[1] migration state hash (any key when unfenced)
--        ARGV[1] phase this call was routed for ('' = unfenced)   ARGV[2] phase when none stored
if ARGV[1] ~= '' and (redis.call('HGET', KEYS[1], 'phase') or ARGV[2]) ~= ARGV[1] then
  return {'stale'}
end
table.remove(KEYS, 1)
table.remove(ARGV, 1)
table.remove(ARGV, 1)
--- @include "count"
