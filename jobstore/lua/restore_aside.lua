-- KEYS[1] a record set aside (StoreKeys.aside)   KEYS[2] the key it was set aside from
-- returns 'restored' | 'occupied' KEYS[2] holds a record again: nothing changed
--       | 'in-place' nothing is set aside there and KEYS[2] holds a record (restored already,
--         e.g. by this call sent again) | 'absent' nothing is set aside there
if redis.call('EXISTS', KEYS[1]) == 0 then
  if redis.call('EXISTS', KEYS[2]) == 1 then return 'in-place' end
  return 'absent'
end
if redis.call('EXISTS', KEYS[2]) == 1 then return 'occupied' end
redis.call('RENAME', KEYS[1], KEYS[2])
return 'restored'
