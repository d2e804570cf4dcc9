-- Each key under a prefix (name and a digest of its content), as a flat list: name, digest, ...
-- tests/api compares them before and after each rejected request: a refusal writes nothing.
-- Keys with an expiry are left out: tick claims, opening locks and rate-limit buckets (left by
-- earlier tests, too) change on their own as time passes, and none of them is a sale's state.
--
-- The content, not DUMP: DUMP writes a hash or a set in its table's order, and Valkey moves a
-- table's entries while it rehashes it, a step at a time, on reads too (an HGET). So a key no
-- one wrote could DUMP differently a moment later: a refused GET "wrote" a sale's records.
-- Sorted by member, the content is the same however the table stands.
local function sorted_pairs(flat)
  local pairs_ = {}
  for i = 1, #flat, 2 do
    pairs_[#pairs_ + 1] = flat[i] .. '\0' .. flat[i + 1]
  end
  table.sort(pairs_)
  return table.concat(pairs_, '\1')
end

local function content(key)
  local kind = redis.call('TYPE', key)['ok']
  if kind == 'string' then
    return redis.call('GET', key)
  elseif kind == 'hash' then
    return sorted_pairs(redis.call('HGETALL', key))
  elseif kind == 'set' then
    local members = redis.call('SMEMBERS', key)
    table.sort(members)
    return table.concat(members, '\1')
  elseif kind == 'zset' then
    return sorted_pairs(redis.call('ZRANGE', key, 0, -1, 'WITHSCORES'))
  elseif kind == 'list' then
    return table.concat(redis.call('LRANGE', key, 0, -1), '\1')
  end
  -- A stream (the events) and anything else: DUMP, whose order is the entries' own.
  return redis.call('DUMP', key)
end

local keys = redis.call('KEYS', ARGV[1])
local out = {}
for _, key in ipairs(keys) do
  if redis.call('PTTL', key) < 0 then
    out[#out + 1] = key
    out[#out + 1] = redis.sha1hex(redis.call('TYPE', key)['ok'] .. '\0' .. content(key))
  end
end
return out
