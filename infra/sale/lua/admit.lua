-- One admission tick of one sale, claimed so that it happens once across schedulers, in two
-- steps (HMAC is not available in Redis Lua, so the scheduler mints the tokens in between).
-- Step 1, the tick:
--   KEYS 1-9: see lib.lua; KEYS[10]: this tick's claim key; KEYS[11]: the admission log.
--   ARGV: claim ttl ms, sweep limit, rate window ms, tick number, interval ms.
--   Reply: {'claimed'} (another scheduler had it) | {'gone'} | {'idle', state}
--          | {'admitted', now_ms, token_expiry_ms, visitor...}: the caller mints and stores
--          the tokens of these visitors.
-- Step 2, 'store': KEYS 1-9. ARGV: 'store', then visitor, token pairs. Reply: tokens stored.
--   One command for the whole batch (a pipeline of HSETNX was one per visitor, which made an
--   admitted visitor cost two commands with its pickup). HSETNX: a queue server that saw the
--   admission first may have minted and handed out a token already (complete.lua); it stays.
if ARGV[1] == 'store' then
  local stored = 0
  for i = 2, #ARGV, 2 do
    stored = stored + redis.call('HSETNX', K_TOKENS, ARGV[i], ARGV[i + 1])
  end
  return stored
end
local claim_ttl, sweep, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if not redis.call('SET', KEYS[10], '1', 'NX', 'PX', claim_ttl) then
  return { 'claimed' }
end
local s = load_sale()
if not s then
  return { 'gone' }
end
local now = now_ms()
-- Replicas whose clocks disagree could name one interval's tick differently; a tick less than
-- half an interval after the last one is therefore refused too.
local last = tonumber(redis.call('HGET', K_SALE, 'last_tick_ms')) or 0
if now - last < tonumber(ARGV[5]) / 2 then
  return { 'claimed' }
end
local state = sale_state(s, now)
if state == 'scheduled' or state == 'prequeue' or state == 'closed' then
  -- Not recorded as a tick: the scheduler that opens the sale in this idle tick runs it
  -- again at once (a claim of its own), and it must not be refused as too close to this one.
  return { 'idle', state }
end
redis.call('HSET', K_SALE, 'last_tick_ms', now)

-- Admissions not picked up in time, and tokens that ran out unused, return their slots.
local missed = redis.call('ZRANGE', K_UNPICKED, '-inf', now, 'BYSCORE', 'LIMIT', 0, sweep)
for _, v in ipairs(missed) do
  release(v, 'expired')
end
if #missed > 0 then
  -- The sale's running total of pickups missed, for /metrics (read at scrape, O(1)).
  redis.call('HINCRBY', K_SALE, 'missed', #missed)
end
for _, v in ipairs(redis.call('ZRANGE', K_ADMITTED, '-inf', now, 'BYSCORE', 'LIMIT', 0, sweep)) do
  release(v, 'expired')
end
-- Places whose tab stopped asking for abandon_ms are lost, so they cannot stall the line.
-- First, a slice of the line (the sweep limit: ~1 ms of Redis) is read from where the last
-- tick stopped: places quiet for half of abandon_ms go to `seen` with when they last asked
-- (lib.lua keeps that in the score), and the sweep below drops them once abandon_ms have run
-- out. A pass reads 300,000 places in 300 s at one tick a second, so lines up to that long
-- are swept on time; in a longer one a deep place may go later, but never unnoticed: status
-- answers place_lost to a visitor that was quiet too long, and the head is checked below.
local slice = sweep
local from = redis.call('HGET', K_SALE, 'scan_from') or '-inf'
local places = redis.call('ZRANGE', K_LINE, from, '+inf', 'BYSCORE', 'LIMIT', 0, slice,
  'WITHSCORES')
local quiet = now - s.abandon_ms / 2
for i = 1, #places, 2 do
  local seen = last_seen_ms(tonumber(places[i + 1]), now)
  if seen and seen < quiet then
    redis.call('ZADD', K_SEEN, seen, places[i])
  end
end
if #places < 2 * slice then
  redis.call('HDEL', K_SALE, 'scan_from') -- the end of the line: start again at the head
else
  -- Slots are unique integers, so the next slice starts at the next slot.
  redis.call('HSET', K_SALE, 'scan_from', math.floor(tonumber(places[#places])) + 1)
end
local stale = now - s.abandon_ms
for _, v in ipairs(redis.call('ZRANGE', K_SEEN, '-inf', stale, 'BYSCORE', 'LIMIT', 0, sweep)) do
  release(v, 'lost')
end

local admitted = {}
if state == 'open' then
  local allow = allowance(s, s.batch_size)
  local dropped = 0
  while #admitted < allow and dropped < sweep do
    local popped = redis.call('ZPOPMIN', K_LINE, allow - #admitted)
    if #popped == 0 then
      break
    end
    for i = 1, #popped, 2 do
      local v = popped[i]
      if abandoned(s, tonumber(popped[i + 1]), now) then
        release(v, 'lost') -- a quiet place that the scan had not reached: not a turn lost
        dropped = dropped + 1
      else
        admit(s, v, now)
        admitted[#admitted + 1] = v
      end
    end
  end
  if #admitted > 0 then
    redis.call('HINCRBY', K_SALE, 'issued', #admitted)
  end
end

-- The measured admission rate feeds every visitor's eta and poll_after_ms. Only ticks that
-- could admit are samples, each worth one interval: time spent paused, before the draw or
-- without a scheduler is not a slow line, and counting it (as the time since the start did)
-- told the visitors of a line moving at full speed to come back much later than their turn.
-- With no sample in the window, the field goes and lib.lua reports the configured rate.
if state == 'open' then
  redis.call('ZADD', KEYS[11], now, ARGV[4] .. ':' .. #admitted)
end
redis.call('ZREMRANGEBYSCORE', KEYS[11], '-inf', now - window)
local samples = redis.call('ZRANGE', KEYS[11], 0, -1)
if #samples > 0 then
  local total = 0
  for _, entry in ipairs(samples) do
    total = total + tonumber(string.match(entry, ':(%d+)$'))
  end
  local span = #samples * math.max(s.interval_ms, 1)
  redis.call('HSET', K_SALE, 'rate', string.format('%.3f', total * 1000 / span))
else
  redis.call('HDEL', K_SALE, 'rate')
end

local reply = { 'admitted', now, now + s.token_ttl_ms }
for _, v in ipairs(admitted) do
  reply[#reply + 1] = v
end
return reply
