-- A visitor asks where it stands: one round trip, O(log N).
-- KEYS 1-9: see lib.lua. ARGV: visitor_id.
-- Reply: {'not_found'} | visitor_status reply (lib.lua).
local s = load_sale()
if not s then
  return { 'not_found' }
end
local now = now_ms()
return visitor_status(s, sale_state(s, now), ARGV[1], now, true)
