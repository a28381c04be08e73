-- Dead letters, written by dequeue.lua here and by bury.lua on Redis Cluster: JSON objects with the
-- entry (bytes outside printable ASCII, and backslash, as \xNN), the reason, the time and, for a
-- record that cannot be decoded, its key and field (jobstore.dead_letters has the Python side).
local function printable(text)
  return (string.gsub(text, '[%c\128-\255\\]', function(c)
    return string.format('\\x%02x', string.byte(c))
  end))
end
