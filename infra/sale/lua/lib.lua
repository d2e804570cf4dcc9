-- Shared helpers: the head of the flashsale function library (infra/sale/scripts.py). They
-- are defined once, when Valkey loads the library, not again on every call as the body of a
-- script would be (that cost ~6 us of Lua per call, a seventh of a status). Every function of
-- one sale receives the same first KEYS, in this order:
--   1 sale  2 seq  3 line  4 seen  5 admitted  6 unpicked  7 tokens  8 fate  9 stock
-- and may take further KEYS after those; bind() points the helpers at them. All times are
-- Redis's own clock (TIME), so every process of the platform agrees on when a sale starts,
-- whatever its host's clock says.

local K_SALE, K_SEQ, K_LINE, K_SEEN, K_ADMITTED, K_UNPICKED, K_TOKENS, K_FATE, K_STOCK

-- Called first by every function: a call runs alone in Valkey, so the keys of this call can
-- live in the library's upvalues until the next one binds its own.
local function bind(KEYS)
  K_SALE, K_SEQ, K_LINE, K_SEEN, K_ADMITTED, K_UNPICKED, K_TOKENS, K_FATE, K_STOCK =
    KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
end

local SALE_FIELDS = {
  'start_ms', 'end_ms', 'prequeue_ms', 'mode', 'batch_size', 'max_active', 'token_ttl_ms',
  'abandon_ms', 'pickup_ms', 'overbook', 'opened', 'paused', 'cancelled', 'rate', 'cut', 'seed',
  'interval_ms',
}

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The sale's config and state as a table, or nil when there is no such sale. One table
-- constructor, sized by the compiler: filling an empty table field by field (with its
-- rehashes) and converting in a second loop cost half of this function (~8 us of Lua).
local function load_sale()
  local r = redis.call('HMGET', K_SALE, unpack(SALE_FIELDS))
  if not r[1] then
    return nil
  end
  local s = {
    start_ms = tonumber(r[1]) or 0, end_ms = tonumber(r[2]) or 0,
    prequeue_ms = tonumber(r[3]) or 0, mode = r[4], batch_size = tonumber(r[5]) or 0,
    max_active = tonumber(r[6]) or 0, token_ttl_ms = tonumber(r[7]) or 0,
    abandon_ms = tonumber(r[8]) or 0, pickup_ms = tonumber(r[9]) or 0,
    overbook = tonumber(r[10]) or 0, opened = r[11], paused = r[12], cancelled = r[13],
    rate = r[14], cut = tonumber(r[15]) or 0, seed = r[16], interval_ms = tonumber(r[17]) or 0,
    stock = tonumber(redis.call('GET', K_STOCK)) or 0,
  }
  -- Until admit.lua has measured the line moving (the opening, or a long pause), the best
  -- estimate of the admission rate is the configured one. Reporting 0 instead told every
  -- visitor polled at the opening that the line was not moving, so they were sent away for
  -- the longest poll (30 s) while the scheduler admitted at full speed: their admissions were
  -- picked up late, filled the stock x overbook cap, and the sale sold out at ~0.4x its rate.
  if not s.rate then
    s.rate = string.format('%.3f', s.batch_size * 1000 / math.max(s.interval_ms, 1))
  end
  return s
end

-- API.md's sale state. `opened` is set by the scheduler once the start (and, in shuffle mode,
-- the draw) is done; until then the line is still a pre-queue even past start_ms.
local function sale_state(s, now)
  if s.cancelled == '1' or (s.end_ms > 0 and now >= s.end_ms) then
    return 'closed'
  end
  if now < s.start_ms - s.prequeue_ms then
    return 'scheduled'
  end
  if now < s.start_ms or s.opened ~= '1' then
    return 'prequeue'
  end
  if s.stock <= 0 then
    return 'sold_out'
  end
  if s.paused == '1' then
    return 'paused'
  end
  return 'open'
end

-- How many more visitors may be admitted now: the stock rule (unexpired, unused tokens stay
-- at or below ceil(stock_left * overbook)) and max_active, capped at `want`.
local function allowance(s, want)
  local active = redis.call('ZCARD', K_ADMITTED)
  local allow = math.min(want, math.ceil(s.stock * s.overbook - 1e-9) - active)
  if s.max_active > 0 then
    allow = math.min(allow, s.max_active - active)
  end
  return math.max(allow, 0)
end

-- When a waiting visitor last asked is kept in its place's score, not in a second sorted set
-- (a member of each cost ~185 bytes per visitor; the line alone costs ~92). A place's score
-- is its integer slot (the join seq, or the drawn rank of an early visitor; unique, so the
-- order is the slots' order) plus tag / 2^21, where tag (1 .. 2^21 - 1) is the second it last
-- asked, modulo ~24 days. Exact in a double while |slot| < 2^31. Tag 0 (a place written
-- without this script, e.g. a bulk load) means "not known", and such a place is never found
-- quiet. `seen` then holds only the visitors found quiet (see admit.lua's scan), with when
-- they last asked, ms: the abandon sweep's work list.
local SEEN_SCALE = 2097152 -- 2^21
local SEEN_TAGS = SEEN_SCALE - 1

local function place_score(slot, now)
  return string.format('%.17g', slot + ((math.floor(now / 1000) % SEEN_TAGS) + 1) / SEEN_SCALE)
end

-- When the place with this score last asked, ms (rounded up to the end of its second, so a
-- place is never found quiet early), or nil when not known.
local function last_seen_ms(score, now)
  local slot = math.floor(score)
  local tag = math.floor((score - slot) * SEEN_SCALE + 0.5)
  if tag == 0 then
    return nil
  end
  local now_s = math.floor(now / 1000)
  local age_s = ((now_s % SEEN_TAGS) + 1 - tag) % SEEN_TAGS
  return (now_s - age_s + 1) * 1000
end

-- Whether the place with this score has been quiet for longer than abandon_ms: it is lost.
local function abandoned(s, score, now)
  local seen = last_seen_ms(score, now)
  return seen ~= nil and seen < now - s.abandon_ms
end

-- Visitor v, in line with this score, asks now: its place keeps its slot, and it is no longer
-- quiet. Only a place quiet for half of abandon_ms can be in `seen` (admit.lua's scan puts it
-- there, and every touch takes it out), so a place that asked more recently than that is not
-- looked for there: one command less on nearly every poll of a storm.
local function touch_place(s, v, score, now)
  local seen = last_seen_ms(score, now)
  redis.call('ZADD', K_LINE, 'XX', place_score(math.floor(score), now), v)
  if seen == nil or seen < now - s.abandon_ms / 2 then
    redis.call('ZREM', K_SEEN, v)
  end
end

-- Gives visitor v an admission: its token expires at now + ttl, and it must be picked up by a
-- status call before now + pickup or the slot returns.
local function admit(s, v, now)
  redis.call('ZADD', K_ADMITTED, now + s.token_ttl_ms, v)
  redis.call('ZADD', K_UNPICKED, now + s.pickup_ms, v)
  redis.call('ZREM', K_SEEN, v)
end

-- Ends whatever place or admission v holds, and remembers why (status then answers for it).
local function release(v, why)
  redis.call('ZREM', K_LINE, v)
  redis.call('ZREM', K_SEEN, v)
  redis.call('ZREM', K_ADMITTED, v)
  redis.call('ZREM', K_UNPICKED, v)
  redis.call('HDEL', K_TOKENS, v)
  redis.call('HSET', K_FATE, v, why)
  if why == 'lost' then
    -- The sale's running total of abandoned places, for /metrics (read at scrape, O(1)).
    redis.call('HINCRBY', K_SALE, 'abandoned', 1)
  end
end

-- Token bucket at `key`: `rate` per second, `burst` deep. Returns {allowed 0/1, tokens left
-- (floored), ms until the next token}.
local function take_token(key, rate, burst, now)
  local b = redis.call('HMGET', key, 't', 'ts')
  local tokens = tonumber(b[1]) or burst
  local ts = tonumber(b[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
  local ttl = math.ceil(burst * 1000 / rate) + 1000
  if tokens < 1 then
    redis.call('HSET', key, 't', tostring(tokens), 'ts', now)
    redis.call('PEXPIRE', key, ttl)
    return { 0, 0, math.ceil((1 - tokens) * 1000 / rate) }
  end
  tokens = tokens - 1
  redis.call('HSET', key, 't', tostring(tokens), 'ts', now)
  redis.call('PEXPIRE', key, ttl)
  return { 1, math.floor(tokens), 0 }
end

-- What visitor v sees now. Returns the reply every queue script shares:
--   { code, state, position, waiting, rate, token, token_expiry_ms, now, start_ms, early, seed,
--     abandon_ms, pickup_ms }
-- code is 'ok', 'place_lost' or 'ticket_invalid'; position -1 means none.
local function base_reply(s, state, now)
  return { 'ok', state, -1, 0, s.rate, '', 0, now, s.start_ms, 0, '', s.abandon_ms, s.pickup_ms }
end

-- The reply for a visitor in line at `score`, `position` from the front of `waiting`.
local function place_reply(s, state, reply, score, position, waiting)
  reply[3], reply[4] = position, waiting
  if state == 'prequeue' then
    reply[2] = 'not_started'
    if s.mode ~= 'fifo' then
      reply[3] = -1 -- the order is drawn at the start
    end
  elseif state == 'paused' then
    reply[2] = 'paused'
  else
    reply[2] = 'waiting'
  end
  if s.cut > 0 and math.floor(score) <= s.cut and s.opened == '1' and s.mode ~= 'fifo' then
    reply[10], reply[11] = 1, s.seed
  end
  return reply
end

local function visitor_status(s, state, v, now, touch)
  local reply = base_reply(s, state, now)
  if state == 'closed' or state == 'sold_out' then
    return reply
  end
  -- A visitor is never in the line and admitted at once (admit.lua pops a place before it
  -- admits; a pass-through is admitted only into an empty line), so the line, where nearly
  -- every poll of a storm finds its visitor, is asked first.
  local score = tonumber(redis.call('ZSCORE', K_LINE, v))
  if score then
    if state ~= 'prequeue' and abandoned(s, score, now) then
      -- Quiet for longer than abandon_ms, and the tick's scan has not reached it yet: the
      -- place is lost all the same (places are not lost during the pre-queue, as before).
      release(v, 'lost')
      reply[1] = 'place_lost'
      return reply
    end
    if touch then
      touch_place(s, v, score, now)
    end
    return place_reply(s, state, reply, score, redis.call('ZRANK', K_LINE, v) + 1,
      redis.call('ZCARD', K_LINE))
  end
  local expiry = tonumber(redis.call('ZSCORE', K_ADMITTED, v))
  if expiry then
    local token = redis.call('HGET', K_TOKENS, v)
    if expiry <= now then
      reply[2] = 'expired'
    elseif token then
      redis.call('ZREM', K_UNPICKED, v) -- picked up: the slot is now the visitor's
      reply[2], reply[6], reply[7] = 'admitted', token, expiry
    else
      -- Admitted, but the token is not stored yet (the scheduler is storing it, or died
      -- between its two steps): the caller mints it (complete.lua), with this expiry.
      reply[2], reply[7] = 'admitting', expiry
    end
    return reply
  end
  local fate = redis.call('HGET', K_FATE, v)
  if fate == 'used' then
    -- It has ordered: its token still lets it see and pay the order until the token expires
    -- (expiry 0: the caller reads it from the token itself).
    local token = redis.call('HGET', K_TOKENS, v)
    if token then
      reply[2], reply[6] = 'admitted', token
      return reply
    end
    reply[2] = 'expired'
  elseif fate == 'expired' then
    reply[2] = 'expired'
  elseif fate == 'lost' then
    reply[1] = 'place_lost'
  else
    reply[1] = 'ticket_invalid'
  end
  return reply
end
