-- wrk script: durable single registrations. Each request PUTs a new handle
--   <IDSIM_PREFIX>/BENCH-<IDSIM_TAG>-<thread>-<n>?overwrite=false
-- with Basic auth (IDSIM_AUTH: base64 of "300%3A0.NA/<prefix>:<secret>") and expects 201.
-- done() prints "IDSIM created=N other=M first_other=STATUS" for the caller to check.
local prefix = os.getenv("IDSIM_PREFIX") or "88.118.8"
local token = os.getenv("IDSIM_AUTH") or ""
local tag = os.getenv("IDSIM_TAG") or tostring(os.time())
local threads = {}
local next_id = 0

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  n = 0
  created = 0
  other = 0
  first_other = 0
end

local body = '{"values":[{"index":1,"type":"URL","data":{"format":"string",' ..
             '"value":"https://ex.com/bench"}}]}'
local headers = {["Authorization"] = "Basic " .. token, ["Content-Type"] = "application/json"}

function request()
  n = n + 1
  local path = string.format("/api/handles/%s/BENCH-%s-%d-%d?overwrite=false", prefix, tag, tid, n)
  return wrk.format("PUT", path, headers, body)
end

function response(status, hdrs, resp_body)
  if status == 201 then
    created = created + 1
  else
    other = other + 1
    if first_other == 0 then first_other = status end
  end
end

function done(summary, latency, requests)
  local c, o, f = 0, 0, 0
  for _, t in ipairs(threads) do
    c = c + t:get("created")
    o = o + t:get("other")
    if f == 0 then f = t:get("first_other") end
  end
  io.write(string.format("IDSIM created=%d other=%d first_other=%d\n", c, o, f))
end
