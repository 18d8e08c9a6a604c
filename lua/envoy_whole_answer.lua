-- lua/envoy_whole_answer.lua, rendered by sidegate/bootstrap/buffers.py.
-- A try whose body the per-try ext_proc replaced with the front's prepared one (CONTINUE_AND_REPLACE,
-- extproc/prepared.py) lost its content-length there (Envoy drops it): it is set again from the
-- body, so the provider gets a length, not a chunked body, as on every other try.
function envoy_on_request(h)
  local headers = h:headers()
  if headers:get("content-length") == nil and headers:get(":method") == "POST" then
    local body = h:body()
    if body ~= nil then h:headers():replace("content-length", tostring(body:length())) end
  end
end
function envoy_on_response(h)
  local ctype = h:headers():get("content-type") or ""
  if string.sub(ctype, 1, 17) ~= "text/event-stream" then h:body() end
end
