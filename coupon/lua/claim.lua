-- One claim, decided atomically: replay of an idempotency key, window, per-user limit, stock; then take
-- a unit and record the claim (the record is the durable ledger until PostgreSQL has the coupon).
-- Every key shares the template's hash tag, so the script runs unchanged on Redis Cluster.
--
-- KEYS[1] pool hash: start_ms, end_ms, stock (the template's own pool or a flash session)
-- KEYS[2] template meta hash: limit
-- KEYS[3] users hash: user id -> coupons taken from this template (template and flash claims alike)
-- KEYS[4] claims hash: coupon id -> claim record
-- KEYS[5] pending zset: coupon id scored by accept time, until PostgreSQL has the coupon
-- KEYS[6] idempotency hash: "<user>:<key>" -> coupon id
-- ARGV: now_ms, user id, coupon id, claim record, idempotency field ('' for none)
-- Returns {outcome, ...}: {'ok', remaining} | {'replay', coupon id, record} | {'not_open'} |
--   {'limit_reached'} | {'sold_out'} | {'no_pool'}
if ARGV[5] ~= '' then
  local prev = redis.call('HGET', KEYS[6], ARGV[5])
  if prev then
    return {'replay', prev, redis.call('HGET', KEYS[4], prev) or ''}
  end
end
local pool = redis.call('HMGET', KEYS[1], 'start_ms', 'end_ms', 'stock')
local limit = redis.call('HGET', KEYS[2], 'limit')
if not pool[3] or not limit then
  return {'no_pool'}
end
local now = tonumber(ARGV[1])
if now < tonumber(pool[1]) or now >= tonumber(pool[2]) then
  return {'not_open'}
end
local held = tonumber(redis.call('HGET', KEYS[3], ARGV[2]) or '0')
if held >= tonumber(limit) then
  return {'limit_reached'}
end
local stock = tonumber(pool[3])
if stock <= 0 then
  return {'sold_out'}
end
redis.call('HINCRBY', KEYS[1], 'stock', -1)
redis.call('HINCRBY', KEYS[3], ARGV[2], 1)
redis.call('HSET', KEYS[4], ARGV[3], ARGV[4])
redis.call('ZADD', KEYS[5], now, ARGV[3])
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[6], ARGV[5], ARGV[3])
end
return {'ok', tostring(stock - 1)}
