-- The shuffle draw's new slots (scheduler.admission._draw): each early visitor's place moves
-- to its drawn slot and keeps the fraction of its score that says when it last asked, as it
-- is now. The scheduler read the places a moment before, and the whole pre-queue comes back
-- at the start, just as the draw runs: writing back the fraction it had read undid every
-- poll in between, so a visitor counted as quiet since its poll before and could lose its
-- place while polling as told.
-- KEYS 1-9: see lib.lua. ARGV: visitor, slot, visitor, slot, ...
-- Reply: how many places moved (a visitor that left meanwhile has none to move).
local moved = 0
for i = 1, #ARGV, 2 do
  local score = tonumber(redis.call('ZSCORE', K_LINE, ARGV[i]))
  if score then
    local asked = score - math.floor(score)
    redis.call('ZADD', K_LINE, 'XX', string.format('%.17g', tonumber(ARGV[i + 1]) + asked),
      ARGV[i])
    moved = moved + 1
  end
end
return moved
