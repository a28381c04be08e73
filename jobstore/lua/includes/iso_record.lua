-- A record whose times are ISO 8601 text (written by other code) keeps that form when jobstore
-- updates it, so that the readers it was written for still read it.
--- @include "time"
local function iso_in(r)
  return is_iso((r.updated_at and r.updated_at ~= '') and r.updated_at or r.created_at)
end
local function iso_record(key)
  local t = redis.call('HMGET', key, 'updated_at', 'created_at')
  return iso_in({updated_at = t[1] or nil, created_at = t[2] or nil})
end
