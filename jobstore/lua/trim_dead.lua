-- KEYS[1] the dead-letter list (newest first)
-- ARGV[1] the age (ms) past which a letter goes   ARGV[2] most letters to drop in this call
-- returns how many letters were dropped
-- Letters are dropped from the oldest end while older than ARGV[1] by the server's clock, the
-- clock a letter's 'at' is written from (epoch seconds, includes/dead_letter.lua); a letter with
-- no readable 'at' (not written by jobstore) counts as old. Safe to re-send: a re-sent call drops only what is old.
--- @include "lease"
local limit = now_ms() - tonumber(ARGV[1])
local dropped = 0
while dropped < tonumber(ARGV[2]) do
  local text = redis.call('LINDEX', KEYS[1], -1)
  if not text then break end
  local ok, letter = pcall(cjson.decode, text)
  local at = ok and type(letter) == 'table' and tonumber(letter['at'])
  if at and at * 1000 >= limit then break end
  redis.call('RPOP', KEYS[1])
  dropped = dropped + 1
end
return dropped
