-- Create a template's pool (its meta hash last, so a claim never sees a half-made pool), with the
-- flash sessions it already has. A pool that exists is left alone: two initialisers cannot double it.
--
-- KEYS[1] template meta hash; KEYS[2..] flash session hashes
-- ARGV: limit, start_ms, end_ms, stock, total, then per session: start_ms, end_ms, stock, initial
-- Returns 1 when this call created the pool, 0 when it existed.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
for i = 2, #KEYS do
  local a = 5 + (i - 2) * 4
  redis.call('HSET', KEYS[i], 'start_ms', ARGV[a + 1], 'end_ms', ARGV[a + 2], 'stock', ARGV[a + 3],
    'initial', ARGV[a + 4])
end
redis.call('HSET', KEYS[1], 'limit', ARGV[1], 'start_ms', ARGV[2], 'end_ms', ARGV[3], 'stock', ARGV[4],
  'total', ARGV[5])
return 1
