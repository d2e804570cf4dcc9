-- The public view of one sale, with its state computed on Redis's clock.
-- KEYS 1-9: see lib.lua. ARGV: none.
-- Reply: {} when there is no such sale, else a flat list of field, value pairs.
local s = load_sale()
if not s then
  return {}
end
local now = now_ms()
local state = sale_state(s, now)
local cfg = redis.call('HMGET', K_SALE, 'name', 'price', 'currency', 'stock_total', 'issued',
  'commitment', 'per_user_limit')
local reply = {
  'state', state, 'now_ms', now, 'start_ms', s.start_ms, 'end_ms', s.end_ms,
  'mode', s.mode, 'rate', s.rate, 'stock_left', math.max(s.stock, 0),
  'waiting', redis.call('ZCARD', K_LINE), 'active', redis.call('ZCARD', K_ADMITTED),
  'name', cfg[1], 'price', cfg[2], 'currency', cfg[3], 'stock_total', cfg[4],
  'issued', cfg[5] or '0', 'per_user_limit', cfg[7],
}
-- The commitment is public from the moment the pre-queue opens; the seed only once drawn.
if state ~= 'scheduled' and s.mode ~= 'fifo' then
  reply[#reply + 1], reply[#reply + 2] = 'commitment', cfg[6]
  if s.opened == '1' then
    reply[#reply + 1], reply[#reply + 2] = 'seed', s.seed
  end
end
return reply
