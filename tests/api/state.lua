-- A digest of every key under a prefix (name and DUMP), sorted: equal digests, equal data.
-- tests/api compares it before and after each rejected request: a refusal writes nothing.
-- Keys with an expiry are left out: tick claims, opening locks and rate-limit buckets (left by
-- earlier tests, too) change on their own as time passes, and none of them is a sale's state.
local keys = redis.call('KEYS', ARGV[1])
table.sort(keys)
local parts = {}
for _, key in ipairs(keys) do
  if redis.call('PTTL', key) < 0 then
    parts[#parts + 1] = key .. '\0' .. redis.call('DUMP', key)
  end
end
return redis.sha1hex(table.concat(parts, '\1'))
