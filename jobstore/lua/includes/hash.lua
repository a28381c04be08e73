-- A hash as a Lua table (field -> value; empty when the key does not exist), read in one command,
-- and a table back as the flat field, value list HGETALL answers.
local function load(key)
  local flat = redis.call('HGETALL', key)
  local record = {}
  for i = 1, #flat, 2 do record[flat[i]] = flat[i + 1] end
  return record
end
local function flat_of(record)
  local flat = {}
  for k, v in pairs(record) do flat[#flat + 1] = k; flat[#flat + 1] = v end
  return flat
end
