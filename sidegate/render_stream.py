"""The direct lane's stream watch: a Lua function of the router-level error filter (`_ERRORS_LUA`
in sidegate/render.py) that does to a direct-lane SSE stream, in Envoy, what the passthrough stream
translators do in the full lane (sidegate/translate/passthrough.py):

- only complete lines are relayed (an unfinished last line is held back to the next chunk), so a
  stream never hands the client half an event;
- a `data:` line whose payload does not look like a JSON object (`{...}`, the same cheap structural
  check as the passthrough translators, no parse), nor `[DONE]`, nor empty, ends the stream: the
  chunk is cut before it, a terminal error event in the client's format is appended, and whatever
  the provider sends after is dropped;
- a stream that ends without its terminal event (OpenAI `[DONE]` or an error event, Anthropic
  `message_stop` or `error`) gets the "ended before the response was complete" error event
  appended to its last chunk;
- the provider's key (`key`, when it has one) is scrubbed from the complete lines it relays (a
  key has no newline, so one never straddles what is relayed and what is held back);
- the outcome (`complete`, `malformed`, `cut`) and the time of the first body chunk go into the
  `sidegate.stream` metadata, read by the access-log observer (extproc/direct.py): a stream whose
  terminal event was relayed is not `aborted` even if the client closed before Envoy saw the
  provider's end, and the first chunk's time is the stream's time to first token.

An upstream reset mid-stream gives the filter no last word (Envoy resets the client's stream):
that stays a connection error.
"""

from __future__ import annotations

from sidegate.errors import Api
from sidegate.translate.common import MALFORMED_EVENT, STREAM_TRUNCATED, sse_error_event

STREAM_NS = "sidegate.stream"
"""Dynamic metadata of a direct-lane stream: `end` (complete|malformed|cut), `first_us` (the first
body chunk, microseconds since the epoch)."""

# `%(ns)s` is filled in; the function runs inside envoy_on_response (LuaJIT), after the error
# filter's `plain_replace`.
STREAM_LUA = """
-- The start of the unfinished last line of `s` (nil when `s` ends with a newline).
local function tail_start(s)
  local i = #s
  if string.byte(s, i) == 10 then return nil end
  while i > 0 and string.byte(s, i) ~= 10 do i = i - 1 end
  return i + 1
end
-- Scans the complete lines of `s` (up to `stop`): the start of a broken `data:` line, or nil;
-- and whether a terminal event went by.
local function scan(s, stop, openai)
  local i, terminal = 1, false
  while true do
    local a = string.find(s, "data:", i, true)
    if a == nil or a > stop then break end
    local e = string.find(s, "\\n", a, true)
    if e == nil then break end
    if a == 1 or string.byte(s, a - 1) == 10 then
      local p, q = a + 5, e - 1
      if string.byte(s, p) == 32 then p = p + 1 end
      if string.byte(s, q) == 13 then q = q - 1 end
      local b1 = string.byte(s, p)
      if q < p then
        -- an empty payload: relayed
      elseif b1 == 123 and string.byte(s, q) == 125 then
        if openai and string.byte(s, p + 2) == 101 and string.sub(s, p, p + 7) == '{"error"' then terminal = true end
      elseif openai and string.sub(s, p, q) == "[DONE]" then
        terminal = true
      else
        return a, terminal
      end
    end
    i = e + 1
  end
  if not openai and (string.find(s, "event: message_stop", 1, true) or string.find(s, "event: error", 1, true)) then
    terminal = true
  end
  return nil, terminal
end
local function watch(h, p, key)
  local openai = p.api == "openai"
  local carry, state, last, out, first = "", 0, nil, "", true
  for chunk in h:bodyChunks() do
    last, out = chunk, ""
    local n = chunk:length()
    if state ~= 0 then
      if n > 0 then chunk:setBytes("") end
    elseif n > 0 then
      if first then
        first = false
        h:streamInfo():dynamicMetadata():set("%(ns)s", "first_us", h:timestampString(EnvoyTimestampResolution.MICROSECOND))
      end
      local raw = chunk:getBytes(0, n)
      local s = raw
      if #carry > 0 then s = carry .. raw end
      local t = tail_start(s)
      local bad, terminal = scan(s, t or #s, openai)
      if bad ~= nil then
        out, carry, state = string.sub(s, 1, bad - 1) .. p.bad, "", 2
        h:streamInfo():dynamicMetadata():set("%(ns)s", "end", "malformed")
      else
        if t ~= nil then out, carry = string.sub(s, 1, t - 1), string.sub(s, t) else out, carry = s, "" end
        if terminal then
          state = 1
          h:streamInfo():dynamicMetadata():set("%(ns)s", "end", "complete")
        end
      end
      if key and string.find(out, key, 1, true) then out = plain_replace(out, key, "[redacted]") end
      if out ~= raw then chunk:setBytes(out) end
    end
  end
  if state == 0 and last ~= nil then
    last:setBytes(out .. p.cut)
    h:streamInfo():dynamicMetadata():set("%(ns)s", "end", "cut")
  end
end
"""


def lua_events(api: Api) -> tuple[bytes, bytes]:
    """(malformed, cut): the terminal error events the watch appends for a client of `api`."""
    etype = "api_error" if api is Api.ANTHROPIC else "server_error"
    return sse_error_event(api, MALFORMED_EVENT, etype), sse_error_event(api, STREAM_TRUNCATED, etype)


def stream_lua() -> str:
    return STREAM_LUA % {"ns": STREAM_NS}
