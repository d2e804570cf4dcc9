-- Completes an admission whose token the scheduler has not stored (yet): the queue server
-- minted one. The first token stored wins, so the visitor and the store always agree, and a
-- scheduler that died between its two steps costs nobody their turn.
-- KEYS 1-9: see lib.lua. ARGV: visitor_id, token.
-- Reply: the visitor's token, or false when it holds no live admission any more.
local v = ARGV[1]
local expiry = tonumber(redis.call('ZSCORE', K_ADMITTED, v))
if not expiry or expiry <= now_ms() then
  return false
end
redis.call('HSETNX', K_TOKENS, v, ARGV[2])
redis.call('ZREM', K_UNPICKED, v) -- picked up by this very answer
return redis.call('HGET', K_TOKENS, v)
