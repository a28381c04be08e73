-- Status order (jobstore.rules.STATUS_RANK): every allowed move raises it.
local RANK = {{ STATUS_RANK }}
-- jobstore.rules.moved_past: a mirrored move to new_status is late, the copy already took that
-- move or a later one (a running job handed out again raises its attempt count instead).
local function moved_past(current_status, new_status, current_attempts, new_attempts)
  local was, new = RANK[current_status or ''] or -1, RANK[new_status or ''] or 99
  return was > new or (was == new and (new_attempts or 0) <= current_attempts)
end
