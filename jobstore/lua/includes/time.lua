-- Stored times: jobstore.job.parse_time in Lua. to_epoch(v) is the epoch seconds of epoch text or
-- ISO 8601 text (a 'T' or a space, optional seconds and fraction, zone 'Z', +HH:MM, +HHMM, +HH;
-- none is UTC), else nil; is_iso(v) tells the two forms apart, so that an update writes the form
-- the record already has.
local epoch_read = {}  -- text -> its epoch number, or false: a script reads a time text once
local function epoch_number(v)
  local known = epoch_read[v]
  if known ~= nil then return known or nil end
  local n = nil
  if string.match(v, '^[+-]?%d+%.?%d*$') or string.match(v, '^[+-]?%d+%.?%d*[eE][+-]?%d+$') then
    n = tonumber(v)
    if n ~= n or n == math.huge or n == -math.huge then n = nil end
  end
  epoch_read[v] = n or false
  return n
end
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  return era * 146097 + yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy - 719468
end
local function iso_parts(v)
  local y, mo, d, rest = string.match(v, '^(%d%d%d%d)%-(%d%d)%-(%d%d)(.*)$')
  if not y then return nil end
  local h, mi, s, frac, zone = '0', '0', '0', '', ''
  if rest ~= '' then
    local hh, mm, tail = string.match(rest, '^[T ](%d%d):(%d%d)(.*)$')
    if not hh then return nil end
    h, mi = hh, mm
    local ss, tail2 = string.match(tail, '^:(%d%d)(.*)$')
    if ss then
      s, tail = ss, tail2
      local f, tail3 = string.match(tail, '^[.,](%d+)(.*)$')
      if f then
        if #f > 9 then return nil end
        frac, tail = f, tail3
      end
    end
    if tail ~= '' then
      if not (tail == 'Z' or string.match(tail, '^[+-]%d%d$') or string.match(tail, '^[+-]%d%d:?%d%d$')) then
        return nil
      end
      zone = tail
    end
  end
  return tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi), tonumber(s), frac, zone
end
local function to_epoch(v)
  if not v or v == '' then return nil end
  local n = epoch_number(v)
  if n then return n end
  local y, mo, d, h, mi, s, frac, zone = iso_parts(v)
  if not y then return nil end
  local leap = (y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0
  local dim = ({31, leap and 29 or 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31})[mo]
  if y < 1 or not dim or d < 1 or d > dim or h > 23 or mi > 59 or s > 59 then return nil end
  local offset = 0
  if zone ~= '' and zone ~= 'Z' then
    local digits = string.gsub(string.sub(zone, 2), ':', '')
    local oh, om = tonumber(string.sub(digits, 1, 2)), tonumber(string.sub(digits, 3)) or 0
    if oh > 23 or om > 59 then return nil end
    offset = (oh * 3600 + om * 60) * (string.sub(zone, 1, 1) == '+' and 1 or -1)
  end
  local t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s - offset
  if frac ~= '' then t = t + tonumber(frac) / 10 ^ #frac end
  return t
end
local function is_iso(v) return v ~= nil and epoch_number(v) == nil and iso_parts(v) ~= nil end
