-- The wrk script of bench/write_throughput.py, which prepends `CONFIG = {...}`:
--   kind    "new_subject": POST a consent for a subject never seen before (one decision) each request
--           "same_subject": POST a consent for the one subject CONFIG.email, granted and withdrawn in turn
--           "cookie": POST cookie choices without a device_id (consentd issues a new device each request)
--           "read": GET CONFIG.path with "{id}" replaced by a random one of CONFIG.ids
--   path, token (sent as a bearer token when set), salt (unique to the run: no email repeats across rounds or
--   runs), origin (sent as Origin when set), policy (the banner's policy_version), email, ids.
-- bench/wrk_report.lua is appended: it counts the answers' statuses and prints the `BENCH_RESULT {json}` line.

local headers = {}
local sent = 0
local thread_tag = "0"

function init(args)
  thread_tag = tostring(thread_id or 0)
  math.randomseed(os.time() * 1000 + (thread_id or 0) * 7919)
  for _ = 1, 10 do math.random() end
  if CONFIG.token ~= "" then headers["Authorization"] = "Bearer " .. CONFIG.token end
  if CONFIG.origin ~= "" then headers["Origin"] = CONFIG.origin end
  if CONFIG.kind ~= "read" then headers["Content-Type"] = "application/json" end
end

local function consent_body(email, status)
  return '{"subject":{"email":"' .. email .. '"},"decisions":[{"purpose":"marketing","channel":"email",' ..
    '"status":"' .. status .. '"}],"source":"bench"}'
end

function request()
  sent = sent + 1
  local kind = CONFIG.kind
  if kind == "new_subject" then
    -- Unique per run (salt), per thread (its own Lua state) and per request (its counter).
    local email = "w" .. CONFIG.salt .. "-" .. thread_tag .. "-" .. sent .. "@bench.example"
    return wrk.format("POST", CONFIG.path, headers, consent_body(email, "granted"))
  elseif kind == "same_subject" then
    local status = (sent % 2 == 0) and "withdrawn" or "granted"
    return wrk.format("POST", CONFIG.path, headers, consent_body(CONFIG.email, status))
  elseif kind == "cookie" then
    local body = '{"choices":{"cookies_analytics":true,"cookies_advertising":false,"cookies_functional":true},' ..
      '"policy_version":"' .. CONFIG.policy .. '"}'
    return wrk.format("POST", CONFIG.path, headers, body)
  else
    local id = CONFIG.ids[math.random(1, #CONFIG.ids)]
    return wrk.format("GET", (CONFIG.path:gsub("{id}", id, 1)), headers)
  end
end
