-- Join the line of a sale, atomically.
-- KEYS 1-9: see lib.lua; KEYS[10]: this client IP's join bucket.
-- ARGV: visitor_id, holds_ticket (1 when the caller proved it is this visitor), joins per
--       second per IP (0 = no limit), burst.
-- Reply: {'not_found'} | {'not_open'} | {'closed'} | {'rate_limited', retry_after_ms}
--        | visitor_status reply + created (0/1) as element 14. A pass-through admission has
--        state 'passthrough' and the token expiry in element 7: the caller mints the token
--        and completes the admission (complete.lua).
local v, holds_ticket = ARGV[1], ARGV[2] == '1'
local rate, burst = tonumber(ARGV[3]), tonumber(ARGV[4])

local s = load_sale()
if not s then
  return { 'not_found' }
end
local now = now_ms()
if rate > 0 then
  local bucket = take_token(KEYS[10], rate, burst, now)
  if bucket[1] == 0 then
    return { 'rate_limited', bucket[3] }
  end
end
local state = sale_state(s, now)
if state == 'scheduled' then
  return { 'not_open' }
elseif state == 'closed' or state == 'sold_out' then
  return { 'closed' }
end

if holds_ticket then
  -- A re-join never moves the caller back and never creates a second place.
  local reply = visitor_status(s, state, v, now, true)
  if reply[1] == 'ok' and reply[2] ~= 'expired' then
    reply[14] = 0
    return reply
  end
  -- An admission that ran out, which the tick has not swept yet, ends now: the new place
  -- below replaces it (left in place, it answered 'expired' again over the new place).
  redis.call('ZREM', K_ADMITTED, v)
  redis.call('ZREM', K_UNPICKED, v)
  redis.call('HDEL', K_TOKENS, v)
end

-- A visitor without a ticket has an id minted just now, which has no fate to forget.
if holds_ticket then
  redis.call('HDEL', K_FATE, v)
end
local before = redis.call('ZCARD', K_LINE)
if state == 'open' and before == 0 and allowance(s, 1) > 0 then
  admit(s, v, now)
  redis.call('HINCRBY', K_SALE, 'issued', 1)
  return { 'ok', 'passthrough', -1, 0, s.rate, '', now + s.token_ttl_ms, now,
    s.start_ms, 0, '', s.abandon_ms, s.pickup_ms, 1 }
end
-- A new place: it was not in the line, is not admitted, and has just asked, so the reply is
-- built here rather than looked up again (visitor_status would cost four more commands).
local seq = redis.call('INCR', K_SEQ)
local score = place_score(seq, now)
redis.call('ZADD', K_LINE, score, v)
local reply = place_reply(s, state, base_reply(s, state, now), tonumber(score),
  redis.call('ZRANK', K_LINE, v) + 1, before + 1)
reply[14] = 1
return reply
