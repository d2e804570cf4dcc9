-- A visitor gives up its place (or its unused admission): the slot returns, the ticket dies.
-- KEYS 1-9: see lib.lua. ARGV: visitor_id.
-- Reply: 'not_found' | 'ok'.
if redis.call('EXISTS', K_SALE) == 0 then
  return 'not_found'
end
release(ARGV[1], 'left')
return 'ok'
