-- Give an order's units back: the compensation of a cancelled or expired order, or the
-- rollback of a reservation whose order.placed could not be produced. Idempotent: the record
-- remembers that its units went back, so a retry after a crash never returns them twice.
-- KEYS 1-9: see lib.lua; 10 bought, 11 orders, 12 idem, 13 pending.
-- ARGV: order_id, 'cancelled' (keep the record, marked) | 'rollback' (forget the order).
-- Reply: 'ok' | 'already' | 'missing'.
local K_BOUGHT, K_ORDERS, K_IDEM, K_PENDING = KEYS[10], KEYS[11], KEYS[12], KEYS[13]
local order_id, how = ARGV[1], ARGV[2]
local raw = redis.call('HGET', K_ORDERS, order_id)
if not raw then
  return 'missing'
end
local record = cjson.decode(raw)
if record.status == 'cancelled' then
  return 'already'
end
redis.call('INCRBY', K_STOCK, record.quantity)
if redis.call('HINCRBY', K_BOUGHT, record.visitor_id, -record.quantity) <= 0 then
  redis.call('HDEL', K_BOUGHT, record.visitor_id)
end
redis.call('ZREM', K_PENDING, order_id)
if how == 'rollback' then
  redis.call('HDEL', K_ORDERS, order_id)
  if record.idem ~= '' then
    redis.call('HDEL', K_IDEM, record.visitor_id .. ':' .. record.idem)
  end
else
  record.status = 'cancelled'
  redis.call('HSET', K_ORDERS, order_id, cjson.encode(record))
end
return 'ok'
