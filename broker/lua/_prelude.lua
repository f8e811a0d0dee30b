-- _prelude: put ahead of every script by scripts.py (after its shebang): the checks each
-- makes of its arguments before its first write, so a bad call fails whole.
local function ms(i, least)  -- ARGV[i] as whole ms, from `least` (default 1) to 3e11
  local v = tonumber(ARGV[i])
  if not v or v < (least or 1) or v > 3e11 or v ~= math.floor(v) then
    error('ARGV[' .. i .. '] is not a count of ms: ' .. tostring(ARGV[i]))
  end
  return v
end
