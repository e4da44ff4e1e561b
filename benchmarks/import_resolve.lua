-- wrk script: GET random synthetic identifiers of `idsim import --generate` (ordinals
-- 0..IDSIM_COUNT-1 under IDSIM_PREFIX), suffixes as topology.importer.local_suffix makes them.
local prefix = os.getenv("IDSIM_PREFIX") or "88.118.8"
local count = tonumber(os.getenv("IDSIM_COUNT") or "1000")
local products = {"AXLE", "BOLT", "CAMS", "DISC", "ENGN", "FUSE", "GEAR", "HOSE", "IGNT",
                  "JXDY", "KNOB", "LENS", "MOTR", "NOZL", "OILP", "PUMP", "QSFP", "RTOR",
                  "SEAL", "TIRE", "UJNT", "VALV", "WIRE", "XFMR", "YOKE", "ZINC"}
local months, serials, first_year = 120, 100000, 16
local seeded = false
local next_id = 0

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
end

request = function()
  if not seeded then
    math.randomseed(os.time() + math.floor(os.clock() * 1e6) + 7919 * (tid or 0))
    seeded = true
  end
  local i = math.random(0, count - 1)
  local p = math.floor(i / (months * serials))
  local rest = i % (months * serials)
  local m = math.floor(rest / serials)
  local s = rest % serials
  return wrk.format("GET", string.format("/api/handles/%s/%s%02d%02d%05d", prefix,
                    products[p + 1], first_year + math.floor(m / 12), m % 12 + 1, s))
end
