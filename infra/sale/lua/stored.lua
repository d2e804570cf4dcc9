-- Orders that PostgreSQL now holds leave the pending set (the reconciler's work list), and
-- their records say 'placed' unless something later already changed them.
-- KEYS 1-9: see lib.lua; 10 bought, 11 orders, 12 idem, 13 pending. ARGV: order ids.
-- Reply: how many records changed.
local K_ORDERS, K_PENDING = KEYS[11], KEYS[13]
local changed = 0
for _, order_id in ipairs(ARGV) do
  redis.call('ZREM', K_PENDING, order_id)
  local raw = redis.call('HGET', K_ORDERS, order_id)
  if raw then
    local record = cjson.decode(raw)
    if record.status == 'pending' then
      record.status = 'placed'
      redis.call('HSET', K_ORDERS, order_id, cjson.encode(record))
      changed = changed + 1
    end
  end
end
return changed
