-- Count one failed login for a throttle key and lock it when the count passes the free allowance.
-- KEYS[1] failure counter, KEYS[2] lock key
-- ARGV[1] window seconds, ARGV[2] free failures, ARGV[3] base lock seconds, ARGV[4] max lock seconds
-- Returns {failures, lock_seconds}.
local n = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))  -- sliding: the window restarts with each failure
local free = tonumber(ARGV[2])
local lock = 0
if n >= free then
  lock = math.min(tonumber(ARGV[4]), tonumber(ARGV[3]) * 2 ^ math.min(n - free, 16))
  redis.call('SET', KEYS[2], '1', 'EX', math.floor(lock))
end
return {n, math.floor(lock)}
