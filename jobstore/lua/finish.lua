-- Fenced (includes/fence.lua): the call's KEYS[1], ARGV[1] and ARGV[2] are the fence's,
-- dropped before the lines below run; the indices below are those left.
-- A worker's finish and its next claim in one step (jobstore.ops.finish): update_status.lua's
-- move of the finished job, then, only once that move is made, dequeue.lua's claim (no wait).
-- KEYS[1 .. n] update_status.lua's KEYS (n: ARGV[1])   KEYS[n + 1 ..] dequeue.lua's KEYS
-- ARGV[1] n   ARGV[2] m, how many ARGV are update_status.lua's
-- ARGV[3 .. m + 2] update_status.lua's ARGV   ARGV[m + 3 ..] dequeue.lua's ARGV
-- returns {update reply}: the job was not moved (nothing written, nothing claimed)
--         | {update reply, dequeue reply}: moved ('updated', or 'replayed'), then the claim
-- Each half keeps its own op marker, so a re-sent call answers what its first attempt did: the
-- move 'replayed' (never a second move, nor an error for the first one), and the claim
-- 'replayed' (the job the first attempt took, never a second one); a first attempt that took
-- nothing takes now, as a new dequeue would.
--- @include "fence"
--- @include "update_record"
--- @include "claim_next"
local n, m = tonumber(ARGV[1]), tonumber(ARGV[2])
local update_keys, update_argv, claim_keys, claim_argv = {}, {}, {}, {}
for i = 1, #KEYS do
  if i <= n then update_keys[i] = KEYS[i] else claim_keys[i - n] = KEYS[i] end
end
for i = 3, #ARGV do
  if i <= m + 2 then update_argv[i - 2] = ARGV[i] else claim_argv[i - m - 2] = ARGV[i] end
end
local moved = update_record(update_keys, update_argv)
if moved[1] ~= 'updated' and moved[1] ~= 'replayed' then return {moved} end
return {moved, claim_next(claim_keys, claim_argv)}
