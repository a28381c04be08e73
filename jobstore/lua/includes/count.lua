-- A stored count (jobstore.rules.count): a write count ('_rev') or an attempt count, up to
-- {{ MAX_COUNT_DIGITS }} decimal digits, else 0 (absent, or written by another tool).
local function stored_count(v)
  if v and #v <= {{ MAX_COUNT_DIGITS }} and string.match(v, '^%d+$') then return tonumber(v) end
  return 0
end
-- A record's write count after one more write (jobstore.rules): per copy, so that a copy that
-- missed writes stays recognisably older.
local function bump(key)
  return stored_count(redis.call('HGET', key, '_rev')) + 1
end
local function bumped(record) return stored_count(record._rev) + 1 end
