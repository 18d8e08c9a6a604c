-- lua/envoy_whole_answer.lua, rendered by sidegate/bootstrap/buffers.py.
function envoy_on_response(h)
  local ctype = h:headers():get("content-type") or ""
  if string.sub(ctype, 1, 17) ~= "text/event-stream" then h:body() end
end
