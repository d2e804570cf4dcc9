-- Create or change a sale's config atomically, keeping stock_left consistent with stock_total.
-- KEYS 1-9: see lib.lua. ARGV: 'create' | 'update', then field, value pairs of the sale hash.
-- A 'stock_total' change moves stock_left by the same amount (units already sold stay sold).
-- Reply: 'ok' | 'exists' | 'not_found' | 'stock_conflict' (stock_left would go below zero)
--        | 'started' (the start, pre-queue or queue mode cannot change once the sale opened).
local op = ARGV[1]
local exists = redis.call('EXISTS', K_SALE) == 1
if op == 'create' and exists then
  return 'exists'
elseif op == 'update' and not exists then
  return 'not_found'
end
local fields = {}
for i = 2, #ARGV, 2 do
  fields[ARGV[i]] = ARGV[i + 1]
end
if op == 'create' then
  redis.call('SET', K_STOCK, fields.stock_total)
else
  local opened = redis.call('HGET', K_SALE, 'opened') == '1'
  if opened and (fields.start_ms or fields.prequeue_ms or fields.mode) then
    return 'started'
  end
  if fields.stock_total then
    local delta = tonumber(fields.stock_total) - tonumber(redis.call('HGET', K_SALE, 'stock_total'))
    local left = tonumber(redis.call('GET', K_STOCK)) or 0
    if left + delta < 0 then
      return 'stock_conflict'
    end
    redis.call('INCRBY', K_STOCK, delta)
  end
end
redis.call('HSET', K_SALE, unpack(ARGV, 2))
if op == 'create' then
  -- `rate` is what admit.lua measured; a new sale has measured nothing, and lib.lua then
  -- reports the configured rate (a stored 0 would say that the line does not move).
  redis.call('HDEL', K_SALE, 'rate')
end
if op == 'create' and tonumber(fields.start_ms) <= now_ms() then
  -- Created after its start: there was no pre-queue, hence nobody to draw; open at once.
  redis.call('HSET', K_SALE, 'opened', '1', 'cut', '0')
end
redis.call('HINCRBY', K_SALE, 'version', 1)
return 'ok'
