-- Dead letters, written here for dequeue.lua (includes/claim_next.lua) and bury.lua (Redis
-- Cluster): JSON objects with the entry (bytes outside printable ASCII, and backslash, as \xNN),
-- the reason, the time and, for a record that cannot be decoded, its key and field
-- (jobstore.dead_letters reads them). The time 'at' is the server's clock (TIME, epoch seconds),
-- never a client's: the sweep trims letters by age on that clock (trim_dead.lua).
--- @include "lease"
local function printable(text)
  return (string.gsub(text, '[%c\128-\255\\]', function(c)
    return string.format('\\x%02x', string.byte(c))
  end))
end
-- Push one letter onto the list (newest first), keeping the newest most; returns its JSON text.
-- entry: as the letter shows it (printable already); key, field: nil (or '') for an entry that
-- cannot be parsed.
local function push_letter(list, most, entry, reason, key, field)
  local letter = {entry = entry, reason = reason, at = now_ms() / 1000}
  if key and key ~= '' then letter.key = key; letter.field = field end
  local text = cjson.encode(letter)
  redis.call('LPUSH', list, text)
  redis.call('LTRIM', list, 0, tonumber(most) - 1)
  return text
end
