-- Count one presentation of an authorization code and return its grant.
-- KEYS[1] the code's hash key. ARGV[1] seconds to keep a used code (to recognise replays).
-- Returns nil for an unknown (or long expired) code, else {presentations, grant_json}.
local data = redis.call('HGET', KEYS[1], 'grant')
if not data then
  return nil
end
local uses = redis.call('HINCRBY', KEYS[1], 'uses', 1)
if uses == 1 then
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
end
return {uses, data}
