-- jobstore.job's UTF-8 rule in Lua: the fields a job is read from (job.TEXT_FIELDS, in the same
-- order) must hold UTF-8 text, as Python's strict decoder takes it (no overlong forms, no
-- surrogates, nothing past U+10FFFF). An ASCII value is passed by one string.find.
local TEXT_FIELDS = {{ TEXT_FIELDS }}
local NOT_UTF8 = {{ NOT_UTF8 }}

local function utf8_text(s)
  if not string.find(s, '[\128-\255]') then return true end
  local i, n = 1, #s
  while i <= n do
    local c = string.byte(s, i)
    local size, low, high = 1, 0x80, 0xBF
    if c < 0x80 then size = 1
    elseif c >= 0xC2 and c <= 0xDF then size = 2
    elseif c >= 0xE0 and c <= 0xEF then
      size = 3
      if c == 0xE0 then low = 0xA0 elseif c == 0xED then high = 0x9F end
    elseif c >= 0xF0 and c <= 0xF4 then
      size = 4
      if c == 0xF0 then low = 0x90 elseif c == 0xF4 then high = 0x8F end
    else return false end
    if size > 1 then
      if i + size - 1 > n then return false end
      local c2 = string.byte(s, i + 1)
      if c2 < low or c2 > high then return false end
      for j = i + 2, i + size - 1 do
        local cj = string.byte(s, j)
        if cj < 0x80 or cj > 0xBF then return false end
      end
    end
    i = i + size
  end
  return true
end
