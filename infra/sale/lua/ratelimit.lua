-- A token bucket (lib.lua's take_token) as a script of its own: the gate's per-visitor limit.
-- KEYS[1]: the bucket. ARGV: rate per second, burst.
-- Reply: {allowed 0/1, tokens left, ms until the next token}.
return take_token(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), now_ms())
