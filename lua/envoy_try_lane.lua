-- lua/envoy_try_lane.lua, rendered by sidegate/bootstrap/try_lane.py.
-- Sidegate try lane: the per-try stage over HTTP. Each try of a request posts the client's body to
-- the front (extproc/trylane.py), which answers with the provider's body and header changes; the
-- provider's buffered response goes back to the same worker for translation. Objects taken before
-- a call that may yield (h:body(), h:httpCall()) are out of scope after it: they are fetched again.
local CLUSTER = "${cluster}"
local TIMEOUT = ${timeout_ms}
local KEY_HEADER, KEY_PREFIX, KEY_ENV = ${key_header}, ${key_prefix}, ${key_env}
local function unescape(s)
  return (string.gsub(s, "%%(%x%x)", function(x) return string.char(tonumber(x, 16)) end))
end
local function apply(headers, answer)
  local remove = answer["${h_remove}"]
  if remove ~= nil then
    for name in string.gmatch(remove, "[^,]+") do headers:remove(name) end
  end
  local set = answer["${h_set}"]
  if set ~= nil then
    for k, v in string.gmatch(set, "([^&=]+)=([^&]*)") do headers:replace(unescape(k), unescape(v)) end
  end
end
local function error_body(api, status)
  local msg = "Sidegate: the per-try stage is unavailable (" .. tostring(status) .. ")."
  if api == "anthropic" then
    return '{"type":"error","error":{"type":"api_error","message":"' .. msg .. '"}}'
  end
  return '{"error":{"message":"' .. msg .. '","type":"server_error","param":null,"code":null}}'
end
local function bytes(b)
  return b:getBytes(0, b:length())
end
-- This try is pending in the worker that answered (`from`: the check's metadata or the call's answer).
local function remember(h, from, api)
  local md = h:streamInfo():dynamicMetadata()
  md:set("${try_ns}", "worker", from["${h_worker}"])
  md:set("${try_ns}", "id", from["${h_key}"])
  md:set("${try_ns}", "api", api or "")
  md:set("${try_ns}", "done", false)
end
function envoy_on_request(h)
  local md = h:streamInfo():dynamicMetadata()
  local front = md:get("${authz_ns}") or {}
  local state = md:get("${try_ns}") or {}
  local n = (state["tries"] or 0) + 1
  md:set("${try_ns}", "tries", n)
  local api = front["${api_header}"]
  if n == 1 and front["${h_prepared}"] == CLUSTER then
    -- The front prepared this try at check time: no call.
    h:body(true):setBytes(front["${h_body}"])
    local headers = h:headers()
    apply(headers, front)
    if KEY_ENV ~= nil then
      local key = os.getenv(KEY_ENV)
      if key ~= nil then headers:replace(KEY_HEADER, KEY_PREFIX .. key) end
    end
    h:streamInfo():dynamicMetadata():set("${authz_ns}", "${h_body}", "")  -- the prompt does not stay in the metadata
    remember(h, front, api)
    return
  end
  local call = {
    [":method"] = "POST", [":path"] = "${prefix}request", [":authority"] = "sidegate-front",
    ["${meta_header}"] = front["${meta_header}"] or "", ["${h_cluster}"] = CLUSTER,
    ["${h_attempt}"] = tostring(n), ["${h_previous}"] = state["id"] or "",
  }
  local answer, body = h:httpCall("sidegate_front", call, bytes(h:body(true)), TIMEOUT)
  body = body or ""
  if answer[":status"] ~= "200" then
    if answer["${h_answer}"] == nil then body = error_body(api, answer[":status"]) end
    h:respond({[":status"] = answer[":status"], ["content-type"] = "application/json"}, body)
    return
  end
  h:body(true):setBytes(body)
  apply(h:headers(), answer)
  remember(h, answer, api)
end
function envoy_on_response(h)
  local state = h:streamInfo():dynamicMetadata():get("${try_ns}")
  if state == nil or state["worker"] == nil then return end
  local headers = h:headers()
  local call = {
    [":method"] = "POST", [":path"] = "${prefix}response", [":authority"] = "sidegate-front",
    ["${h_key}"] = state["id"], ["${h_status}"] = headers:get(":status"), ["${api_header}"] = state["api"],
  }
  -- Every provider header the response allow-list let through (the stage reads some, and drops
  -- any whose value echoes a key).
  for name, v in pairs(headers) do
    if string.byte(name, 1) ~= 58 then call["${h_passed}" .. name] = v end
  end
  local answer, body = h:httpCall("sidegate_front." .. state["worker"], call, bytes(h:body(true)), TIMEOUT)
  h:streamInfo():dynamicMetadata():set("${try_ns}", "done", true)
  body = body or ""
  local status = answer["${h_status}"]
  if answer[":status"] ~= "200" or status == nil then
    status = answer[":status"] == "200" and "502" or answer[":status"]
    if answer["${h_answer}"] == nil then body = error_body(state["api"], status) end
    answer = {["${h_set}"] = "content-type=application%2Fjson"}
  end
  h:body(true):setBytes(body)  -- (true: a buffer even when the provider sent no body)
  headers = h:headers()
  headers:replace(":status", status)
  apply(headers, answer)
  headers:replace("content-length", tostring(#body))
end
