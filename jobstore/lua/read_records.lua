-- flags: read-only
-- KEYS[1 ..] record keys   returns the HGETALL of each, read at one instant (standalone only:
-- verify compares a record with its counterpart, and a write between two reads is no difference)
-- A key holding another type reads as {'\0not-a-hash', type}: reported, never an error.
local out = {}
for i = 1, #KEYS do
  local kind = redis.call('TYPE', KEYS[i]).ok
  if kind == 'hash' or kind == 'none' then
    out[i] = redis.call('HGETALL', KEYS[i])
  else
    out[i] = {'\0not-a-hash', kind}
  end
end
return out
