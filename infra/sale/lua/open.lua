-- The start of a sale. Step 'begin' fixes the set of early visitors (everyone who joined
-- before start_ms holds seq 1..cut) and takes the opening lock; the scheduler then draws
-- their order in chunks; step 'finish' marks the sale open, which reveals the seed.
-- KEYS 1-9: see lib.lua; KEYS[10]: the opening lock.
-- ARGV: 'begin' | 'finish', lock ttl ms, lock owner.
-- Reply to begin: {'not_yet'} | {'done'} | {'busy'} | {'go', cut, mode, seed}.
-- Reply to finish: {'done'} | {'lost_lock'}.
local s = load_sale()
if not s then
  return { 'done' }
end
if ARGV[1] == 'begin' then
  if s.opened == '1' then
    return { 'done' }
  end
  if now_ms() < s.start_ms then
    return { 'not_yet' }
  end
  if not redis.call('SET', KEYS[10], ARGV[3], 'NX', 'PX', tonumber(ARGV[2])) then
    return { 'busy' }
  end
  -- HSETNX: a retry after a crashed draw keeps the first cut, so the draw is repeatable.
  redis.call('HSETNX', K_SALE, 'cut', redis.call('GET', K_SEQ) or '0')
  return { 'go', redis.call('HGET', K_SALE, 'cut'), s.mode, s.seed or '' }
end
if redis.call('GET', KEYS[10]) ~= ARGV[3] then
  return { 'lost_lock' }
end
redis.call('HSET', K_SALE, 'opened', '1')
redis.call('DEL', KEYS[10])
return { 'done' }
