-- A record whose times are ISO 8601 text (written by other code) keeps that form when jobstore
-- updates it, so that the readers it was written for still read it.
--- @include "time"
local function iso_record(key)
  local t = redis.call('HMGET', key, 'updated_at', 'created_at')
  return is_iso((t[1] and t[1] ~= '') and t[1] or t[2])
end
