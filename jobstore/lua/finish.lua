-- Fenced (includes/fence.lua): the call's KEYS[1], ARGV[1] and ARGV[2] are the fence's,
-- dropped before the lines below run; the indices below are those left.
-- A worker's finish and its next claim in one step (jobstore.ops.finish): update_status.lua's
-- move of the finished job, then, only once that move is made, dequeue.lua's claim (no wait).
-- KEYS[1 .. n] update_status.lua's KEYS (n: ARGV[1])   KEYS[n + 1 ..] dequeue.lua's KEYS
-- ARGV[1] n   ARGV[2] m, how many ARGV are update_status.lua's
-- ARGV[3 .. m + 2] update_status.lua's ARGV   ARGV[m + 3 ..] dequeue.lua's ARGV
-- returns {update reply}: the job was not moved (nothing written, nothing claimed)
--         | {update reply, dequeue reply}: moved ('updated', or 'replayed'), then the claim;
--         the update reply carries no record: {'updated' | 'replayed', {}, key, expiry}
-- One op marker answers both halves (dequeue.lua's, KEYS[n + 3]; update_status.lua's KEYS[1] is
-- not read), written once, with the claim (or with the move, when nothing was claimed), by mark
-- in includes/claim_next.lua (its layout is there; the move half reads its 3rd and 4th items
-- below). A re-sent call answers what its first attempt did: the move 'replayed' (never a
-- second move, nor an error for the first one), and the claim 'replayed' (the job the first
-- attempt took, never a second one); a first attempt that took nothing takes now, as a new
-- dequeue would. The move half reads the marker only when the job is not running under the
-- claim given (includes/update_record.lua): a first attempt, the common case, reads none.
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
local first = false  -- the marker, when the move half read one of this call's
local function replay(last)
  local saved = redis.call('GET', claim_keys[3])
  if not saved then return nil end
  local found = cjson.decode(saved)
  for i = 2, last do
    if update_keys[i] == found[3] then
      first = found
      return {'replayed', {}, found[3], found[4] or 0}
    end
  end
  return {'not_mine'}  -- another call's marker (a token drawn twice)
end
local moved = update_record(update_keys, update_argv, replay, false)
if moved[1] ~= 'updated' and moved[1] ~= 'replayed' then return {moved} end
return {moved, claim_next(claim_keys, claim_argv, {first, moved[3], moved[4]})}
