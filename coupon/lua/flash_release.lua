-- Undo flash_reserve.lua when the session could not be stored: give the stock back to the template.
-- Only a session nobody claimed from can be released (it was never visible, so nobody could).
--
-- KEYS[1] template meta hash; KEYS[2] the session's hash
-- Returns 1 when released, 0 otherwise.
local s = redis.call('HMGET', KEYS[2], 'stock', 'initial')
if not s[1] or s[1] ~= s[2] then
  return 0
end
redis.call('HINCRBY', KEYS[1], 'stock', tonumber(s[1]))
redis.call('DEL', KEYS[2])
return 1
