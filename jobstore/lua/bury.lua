-- KEYS[1] op marker   KEYS[2] dead-letter list
-- ARGV[1] marker ttl (s)   ARGV[2] most dead letters kept   ARGV[3] the entry (printable:
-- jobstore.dead_letters.printable)   ARGV[4] the reason   ARGV[5] the record's key ('' for an
-- entry that cannot be parsed)   ARGV[6] the record's field
-- returns this call's dead letter (JSON): written now, at the server's time
-- (includes/dead_letter.lua), or by its first attempt (a re-send writes nothing)
--- @include "dead_letter"
local written = redis.call('GET', KEYS[1])
if written then return written end
local text = push_letter(KEYS[2], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
redis.call('SET', KEYS[1], text, 'EX', ARGV[1])
return text
