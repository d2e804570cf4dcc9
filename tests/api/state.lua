-- A digest of every key under a prefix (name and DUMP), sorted: equal digests, equal data.
-- tests/api compares it before and after each rejected request: a refusal writes nothing.
local keys = redis.call('KEYS', ARGV[1])
table.sort(keys)
local parts = {}
for i, key in ipairs(keys) do
  parts[i] = key .. '\0' .. redis.call('DUMP', key)
end
return redis.sha1hex(table.concat(parts, '\1'))
