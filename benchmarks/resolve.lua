-- wrk script: GET random demo identifiers SN000000000..N-1 under the prefixes in PREFIXES.
-- env: IDSIM_PREFIXES="88.118.8,88.101.1", IDSIM_COUNT=1000
local prefixes = {}
for p in string.gmatch(os.getenv("IDSIM_PREFIXES") or "88.118.8", "[^,]+") do
  prefixes[#prefixes + 1] = p
end
local count = tonumber(os.getenv("IDSIM_COUNT") or "1000")
local seeded = false
local next_id = 0

-- each wrk thread has its own Lua state: give each its own seed, or they draw the same keys
function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
end

request = function()
  if not seeded then
    math.randomseed(os.time() + math.floor(os.clock() * 1e6) + 7919 * (tid or 0))
    seeded = true
  end
  local p = prefixes[math.random(#prefixes)]
  local i = math.random(0, count - 1)
  return wrk.format("GET", string.format("/api/handles/%s/SN%09d", p, i))
end
