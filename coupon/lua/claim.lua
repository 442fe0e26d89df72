-- Claims on one pool, decided atomically and one after the other in the order given (a batch of one is a
-- single claim): replay of an idempotency key, window, per-user limit, stock; then take a unit and record
-- the claim (the record is the durable ledger until PostgreSQL has the coupon). A batch is exactly the
-- claims run one by one: a runner twice in one batch meets its limit, an idempotency key twice replays.
-- Every key shares the template's hash tag, so the script runs unchanged on Redis Cluster.
--
-- KEYS[1] pool hash: start_ms, end_ms, stock (the template's own pool or a flash session)
-- KEYS[2] template meta hash: limit
-- KEYS[3] users hash: user id -> coupons taken from this template (template and flash claims alike)
-- KEYS[4] claims hash: coupon id -> claim record
-- KEYS[5] pending zset: coupon id scored by accept time, until PostgreSQL has the coupon
-- KEYS[6] idempotency hash: "<user>:<key>" -> coupon id
-- ARGV: per claim, five values: now_ms, user id, coupon id, claim record, idempotency field ('' for none)
-- Returns three values per claim, in order: 'ok', remaining, '' | 'replay', coupon id, record |
--   'not_open' | 'limit_reached' | 'sold_out' | 'no_pool', '', ''
local out = {}
local pool = redis.call('HMGET', KEYS[1], 'start_ms', 'end_ms', 'stock')
local limit = redis.call('HGET', KEYS[2], 'limit')
local exists = pool[3] and limit
local start_ms, end_ms, stock, max_held
if exists then
  start_ms, end_ms, stock, max_held = tonumber(pool[1]), tonumber(pool[2]), tonumber(pool[3]), tonumber(limit)
end
local taken = 0
for i = 1, #ARGV, 5 do
  local now, user, coupon, record, idem = tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local prev = idem ~= '' and redis.call('HGET', KEYS[6], idem)
  if prev then
    out[#out + 1] = 'replay'
    out[#out + 1] = prev
    out[#out + 1] = redis.call('HGET', KEYS[4], prev) or ''
  elseif not exists then
    out[#out + 1] = 'no_pool'
    out[#out + 1] = ''
    out[#out + 1] = ''
  elseif now < start_ms or now >= end_ms then
    out[#out + 1] = 'not_open'
    out[#out + 1] = ''
    out[#out + 1] = ''
  elseif tonumber(redis.call('HGET', KEYS[3], user) or '0') >= max_held then
    out[#out + 1] = 'limit_reached'
    out[#out + 1] = ''
    out[#out + 1] = ''
  elseif stock - taken <= 0 then
    out[#out + 1] = 'sold_out'
    out[#out + 1] = ''
    out[#out + 1] = ''
  else
    taken = taken + 1
    redis.call('HINCRBY', KEYS[3], user, 1)
    redis.call('HSET', KEYS[4], coupon, record)
    redis.call('ZADD', KEYS[5], now, coupon)
    if idem ~= '' then
      redis.call('HSET', KEYS[6], idem, coupon)
    end
    out[#out + 1] = 'ok'
    out[#out + 1] = tostring(stock - taken)
    out[#out + 1] = ''
  end
end
if taken > 0 then
  redis.call('HINCRBY', KEYS[1], 'stock', -taken)
end
return out
