-- Each key under a prefix (name and a digest of its DUMP), as a flat list: name, digest, ...
-- tests/api compares them before and after each rejected request: a refusal writes nothing.
-- Keys with an expiry are left out: tick claims, opening locks and rate-limit buckets (left by
-- earlier tests, too) change on their own as time passes, and none of them is a sale's state.
local keys = redis.call('KEYS', ARGV[1])
local out = {}
for _, key in ipairs(keys) do
  if redis.call('PTTL', key) < 0 then
    out[#out + 1] = key
    out[#out + 1] = redis.sha1hex(redis.call('DUMP', key))
  end
end
return out
