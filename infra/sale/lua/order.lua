-- Reserve stock for an order, atomically: the sale is open, the visitor is within its limit,
-- the stock covers the quantity; then stock and the visitor's count move and the reservation
-- record (which carries the Idempotency-Key mapping) is written. Price and currency are
-- snapshotted from the catalog here, never taken from the client.
-- KEYS 1-9: see lib.lua; 10 bought, 11 orders, 12 idem, 13 pending.
-- ARGV: visitor_id, quantity, new order_id, Idempotency-Key ('' for none), product_id.
-- Reply: {'not_found'} | {'closed', state} | {'too_many', per_user_limit} | {'limit_reached'}
--        | {'sold_out'} | {'exists', record} | {'ok', record}
local K_BOUGHT, K_ORDERS, K_IDEM, K_PENDING = KEYS[10], KEYS[11], KEYS[12], KEYS[13]
local v, qty, order_id, idem = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]

local s = load_sale()
if not s then
  return { 'not_found' }
end
if idem ~= '' then
  local prior = redis.call('HGET', K_IDEM, v .. ':' .. idem)
  if prior then
    return { 'exists', redis.call('HGET', K_ORDERS, prior) }
  end
end
local now = now_ms()
local state = sale_state(s, now)
if state == 'sold_out' then
  return { 'sold_out' }
elseif state ~= 'open' and state ~= 'paused' then
  return { 'closed', state }
end
local cfg = redis.call('HMGET', K_SALE, 'per_user_limit', 'price', 'currency', 'hold_s')
local limit = tonumber(cfg[1])
if qty > limit then
  return { 'too_many', limit }
end
if (tonumber(redis.call('HGET', K_BOUGHT, v)) or 0) + qty > limit then
  return { 'limit_reached' }
end
if s.stock < qty then
  return { 'sold_out' }
end
redis.call('DECRBY', K_STOCK, qty)
redis.call('HINCRBY', K_BOUGHT, v, qty)
local price = tonumber(cfg[2])
local record = cjson.encode({
  order_id = order_id, product_id = ARGV[5], visitor_id = v,
  quantity = qty, unit_price = price, currency = cfg[3], total = price * qty,
  status = 'pending', created_ms = now, hold_expires_ms = now + tonumber(cfg[4]) * 1000,
  idem = idem,
})
redis.call('HSET', K_ORDERS, order_id, record)
if idem ~= '' then
  redis.call('HSET', K_IDEM, v .. ':' .. idem, order_id)
end
redis.call('ZADD', K_PENDING, now, order_id)
-- The token has done its job: it no longer holds an admission slot (the stock rule counts
-- the order instead), but it still lets its visitor see and pay the order.
redis.call('ZREM', K_ADMITTED, v)
redis.call('ZREM', K_UNPICKED, v)
redis.call('HSET', K_FATE, v, 'used')
return { 'ok', record }
