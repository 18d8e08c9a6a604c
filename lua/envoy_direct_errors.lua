-- lua/envoy_direct_errors.lua (with lua/envoy_stream_watch.lua in it), rendered by sidegate/bootstrap/direct_lane.py.
-- Sidegate direct lane: what the per-try stage does to a provider's error, done in Envoy.
-- The providers are not listed here: each `~direct` route carries, in its metadata under this
-- filter's name, the entries of its chain's providers (their key's environment variable, API and
-- 502 bodies: sidegate/bootstrap/direct_lane.py direct_errors_metadata), so the listener does not
-- change when the routing document does. The stream watch's error events, per API:
local WATCHES = {${watches}}
-- A Responses client's stream watch (its provider, `api: openai` or `api: responses`, takes it as is).
local RESPONSES = WATCHES["${responses}"]
-- The content types json_to_metadata parses (it compares the whole header value).
local JSON_TYPES = {${json_types}}
local function plain_replace(s, needle, repl)
  local out, i = {}, 1
  while true do
    local a, b = string.find(s, needle, i, true)
    if a == nil then break end
    out[#out + 1] = string.sub(s, i, a - 1) .. repl
    i = b + 1
  end
  out[#out + 1] = string.sub(s, i)
  return table.concat(out)
end

${stream_watch}
local function replace(h, body)
  local headers = h:headers()
  headers:replace(":status", "502")
  headers:replace("content-type", "application/json")
  headers:remove("content-encoding")  -- the provider's, not this plain JSON's
  -- true: a buffer even for a response without a body (else the body set here is never sent,
  -- and the client waits for the content-length below until its timeout).
  h:body(true):setBytes(body)
  headers:replace("content-length", tostring(#body))
end
-- A provider's key, read from Envoy's environment once per worker and variable (false: none).
local KEYS = {}
local function secret(env)
  local key = KEYS[env]
  if key == nil then
    key = os.getenv(env) or false
    if key and #key < 8 then key = false end
    KEYS[env] = key
  end
  return key
end
-- A provider echoing its key in a header the response allow-list let through: the header goes.
local function scrub_headers(headers, key)
  local echoed = nil
  for name, v in pairs(headers) do
    if string.find(v, key, 1, true) then echoed = echoed or {}; echoed[#echoed + 1] = name end
  end
  if echoed ~= nil then
    for _, name in ipairs(echoed) do headers:remove(name) end
  end
end
local function scrub_body(h, key)
  local b = h:body()
  if b == nil then return end
  local text = b:getBytes(0, b:length())
  if string.find(text, key, 1, true) then
    local clean = plain_replace(text, key, "[redacted]")
    b:setBytes(clean)
    h:headers():replace("content-length", tostring(#clean))
  end
end
function envoy_on_response(h)
  -- The common case first and cheapest: a success whose body parsed (no metadata tables built).
  local headers = h:headers()
  local status = tonumber(headers:get(":status")) or 0
  local md = h:streamInfo():dynamicMetadata()
  -- The entry of the provider that served the try, from the route the gateway picked (nil: no
  -- provider answered, or the route is not a direct-lane one).
  local pname = headers:get("x-sidegate-provider")
  local p = pname ~= nil and h:metadata():get(pname) or nil
  local key = p ~= nil and p.env ~= nil and secret(p.env)
  if key then scrub_headers(headers, key) end
  local invalid, stream = false, false
  if status < 400 then
    -- A stream is not JSON: json_to_metadata flags it; the stream watch (sidegate/bootstrap/stream.py)
    -- reads its usage, ends a broken or cut stream with an error event and scrubs the provider key
    -- from the lines it relays.
    local ct = headers:get("content-type")
    stream = ct ~= nil and string.find(ct, "text/event-stream", 1, true) ~= nil
    if not stream then
      local usage = md:get("${usage_ns}")
      invalid = usage ~= nil and usage["invalid"] ~= nil
      if not invalid then
        if key then scrub_body(h, key) end  -- already buffered by json_to_metadata
        return
      end
      -- json_to_metadata also flags a JSON type it does not list (`charset=utf8`, `Application/JSON`):
      -- that proves nothing about the body, which is relayed (its usage is not read).
      if ct ~= nil and not JSON_TYPES[ct] and string.find(string.lower(ct), "application/json", 1, true) then
        if key then scrub_body(h, key) end
        return
      end
    end
  end
  local sg = md:get("${meta_ns}")
  local front = md:get("${authz_ns}")
  local direct = (sg ~= nil and sg["lane"] == "direct") or (front ~= nil and front["${lane_header}"] == "direct")
  if not direct or p == nil then return end
  if stream then
    headers:remove("content-length")  -- the watch may change the body's length: sent chunked
    if (sg ~= nil and sg["api"] == "responses") or (front ~= nil and front["${api_header}"] == "responses") then
      watch(h, RESPONSES, key)
    else
      watch(h, WATCHES[p.api], key)
    end
  elseif status < 400 then
    replace(h, p.invalid)
  elseif status == 401 or status == 403 then
    replace(h, p.refused)
  elseif key then
    scrub_body(h, key)
  end
end
