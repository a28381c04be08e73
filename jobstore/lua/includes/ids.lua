-- A workspace or job id (jobstore.validation.IDENTIFIER): 1 to {{ MAX_ID_LENGTH }} characters of
-- the id alphabet; anything else (nil, false, another type) is none.
local function is_id(s)
  return type(s) == 'string' and #s >= 1 and #s <= {{ MAX_ID_LENGTH }}
    and not string.find(s, '[^{{ ID_CLASS }}]')
end
