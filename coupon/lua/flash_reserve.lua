-- Move a flash session's stock out of its template's pool, atomically: template claims and flash claims
-- of one template can then never together exceed its total.
--
-- KEYS[1] template meta hash; KEYS[2] the session's hash
-- ARGV: stock, start_ms, end_ms
-- Returns {'ok', template stock left} | {'short', template stock} | {'no_pool'} | {'exists'}
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {'exists'}
end
local left = redis.call('HGET', KEYS[1], 'stock')
if not left then
  return {'no_pool'}
end
left = tonumber(left)
local want = tonumber(ARGV[1])
if left < want then
  return {'short', tostring(left)}
end
redis.call('HINCRBY', KEYS[1], 'stock', -want)
redis.call('HSET', KEYS[2], 'start_ms', ARGV[2], 'end_ms', ARGV[3], 'stock', want, 'initial', want)
return {'ok', tostring(left - want)}
