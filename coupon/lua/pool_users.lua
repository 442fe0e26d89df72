-- Load per-user counts into a pool that is being rebuilt from PostgreSQL. Refused once the pool's meta
-- exists: from then on only claim.lua changes the counts (a slow rebuilder cannot overwrite them).
--
-- KEYS[1] template meta hash; KEYS[2] users hash
-- ARGV: user id, count, user id, count, ...
-- Returns 1 when written, 0 when the pool already existed.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
if #ARGV > 0 then
  redis.call('HSET', KEYS[2], unpack(ARGV))
end
return 1
