-- lua/envoy_stream_watch.lua: a part of lua/envoy_direct_errors.lua (why: sidegate/bootstrap/stream.py).
-- The start of the unfinished last line of `s` (nil when `s` ends with a newline); `from`: where
-- the new bytes start (what comes before them is one unfinished line, without a newline).
local function tail_start(s, from)
  local i = #s
  if string.byte(s, i) == 10 then return nil end
  while i >= from and string.byte(s, i) ~= 10 do i = i - 1 end
  if i < from then return 1 end
  return i + 1
end
-- The first line of `s` starting before `stop` that begins with `needle` (nil if none).
local function line_at(s, needle, stop)
  local i = 1
  while true do
    local a = string.find(s, needle, i, true)
    if a == nil or a >= stop then return nil end
    if a == 1 or string.byte(s, a - 1) == 10 then return a end
    i = a + 1
  end
end
-- Scans the complete lines of `s` (those starting before `stop`) up to the first terminal line
-- (OpenAI chat: `data: [DONE]` or an error object; Anthropic and Responses: one of `terms`, the
-- API's terminal `event:` lines, as lines: a text that quotes them is payload): the start of the
-- first broken `data:` line before it, or nil; the terminal line's start, or nil; and how many
-- sound `data:` lines it passed (a Responses error event carries the stream's sequence number).
local function scan(s, stop, openai, terms)
  local term = nil
  if not openai then
    for _, needle in ipairs(terms) do
      local t = line_at(s, needle, stop)
      if t ~= nil and (term == nil or t < term) then term = t end
    end
    if term ~= nil then stop = term end
  end
  local i, n = 1, 0
  while true do
    local a = string.find(s, "data:", i, true)
    if a == nil or a >= stop then break end
    local e = string.find(s, "\n", a, true)
    if e == nil then break end
    if a == 1 or string.byte(s, a - 1) == 10 then
      local p, q = a + 5, e - 1
      if string.byte(s, p) == 32 then p = p + 1 end
      if string.byte(s, q) == 13 then q = q - 1 end
      local b1 = string.byte(s, p)
      if q < p then
        -- an empty payload: relayed
      elseif b1 == 123 and string.byte(s, q) == 125 then
        if openai and string.byte(s, p + 2) == 101 and string.sub(s, p, p + 7) == '{"error"' then return nil, a, n end
      elseif openai and string.sub(s, p, q) == "[DONE]" then
        return nil, a, n
      else
        return a, nil, n
      end
      n = n + 1
    end
    i = e + 1
  end
  return nil, term, n
end
-- An error event of the watch, numbered after the `seq` events relayed (Responses events carry
-- a `sequence_number`; the other APIs' have no placeholder).
local function numbered(event, seq)
  return (string.gsub(event, "${seq_placeholder}", tostring(seq), 1))
end
-- The end of the first empty line of `s` from the line starting at `from` on (nil if none yet).
local function blank_end(s, from)
  local _, e = string.find(s, "^\r?\n", from)
  if e == nil then _, e = string.find(s, "\n\r?\n", from) end
  return e
end
-- The provider's usage, read from the lines the watch relays (in place of Envoy's sse_to_metadata,
-- which JSON-parsed every event, ~16 µs each, before the chunk's first event could leave): only
-- where a `"usage"` key opens an object (a key: inside a JSON string its quotes are escaped) are
-- the token counts read, from there to the line's end (the usage object is the event's last
-- but for scalars). Anthropic's message_start counts only the input side (its output_tokens is a
-- placeholder; message_delta's is the total). The model: the first `"model"` key's string.
local USAGE_PATTERNS, START_KEYS = {}, {input_tokens = true, cache_read_input_tokens = true, cache_creation_input_tokens = true}
for _, k in ipairs({"prompt_tokens", "completion_tokens", "cached_tokens", "input_tokens", "output_tokens",
                    "cache_read_input_tokens", "cache_creation_input_tokens"}) do
  USAGE_PATTERNS[k] = '"' .. k .. '"%s*:%s*(%d+)'
end
local function meter(s, mark, model_seen)
  if not model_seen then
    local m = string.find(s, '"model"', 1, true)
    if m ~= nil then
      local v = string.match(s, '^%s*:%s*"([^"]*)"', m + 7)
      if v ~= nil then mark("model", v); model_seen = true end
    end
  end
  local i = 1
  while true do
    local u = string.find(s, '"usage"', i, true)
    if u == nil then return model_seen end
    local e = string.find(s, "\n", u, true) or #s
    local o = string.find(s, '^%s*:%s*{', u + 7)
    if o ~= nil then
      local ls = u
      while ls > 1 and string.byte(s, ls - 1) ~= 10 do ls = ls - 1 end
      local st = string.find(s, '"message_start"', ls, true)
      local seg = string.sub(s, o, e)
      for k, pat in pairs(USAGE_PATTERNS) do
        if st == nil or st > u or START_KEYS[k] then
          local v = string.match(seg, pat)
          if v ~= nil then mark(k, tonumber(v)) end
        end
      end
    end
    i = e + 1
  end
end
-- state 0: relaying; 1: the terminal event has begun, relayed up to its end (its empty line);
-- 2: ended (the terminal event relayed whole, or the stream cut at a broken line): nothing more.
-- `p`: the client API's watch (`api`, `terms`, the `bad` and `cut` error events).
local function watch(h, p, key)
  local openai, terms = p.api == "openai", p.terms
  local carry, state, last, out, first, seq = "", 0, nil, "", true, 0
  -- (the metadata object is fetched at each use: a wrapper taken before bodyChunks() yields is dead after)
  local function mark(k, v) h:streamInfo():dynamicMetadata():set("${stream_ns}", k, v) end
  local function use(k, v) h:streamInfo():dynamicMetadata():set("${usage_ns}", k, v) end
  local model_seen = false
  for chunk in h:bodyChunks() do
    last, out = chunk, ""
    local n = chunk:length()
    if state == 2 then
      if n > 0 then chunk:setBytes("") end
    elseif n > 0 then
      if first then
        first = false
        mark("first_us", h:timestampString(EnvoyTimestampResolution.MICROSECOND))
      end
      local raw = chunk:getBytes(0, n)
      local s = raw
      if #carry > 0 then s = carry .. raw end
      local t = tail_start(s, #carry + 1)
      if t == 1 then
        carry = s  -- no complete line yet (one long event): nothing to scan
      else
        local bad, term, n = nil, nil, 0
        if state == 0 then bad, term, n = scan(s, t or #s + 1, openai, terms) else term = 1 end
        seq = seq + n
        local e = term ~= nil and blank_end(s, term) or nil
        if bad ~= nil then
          out, carry, state = string.sub(s, 1, bad - 1) .. numbered(p.bad, seq), "", 2
          mark("end", "malformed")
        elseif e ~= nil then
          out, carry = string.sub(s, 1, e), ""
          if state == 0 then mark("end", "complete") end
          state = 2
        else
          if t ~= nil then out, carry = string.sub(s, 1, t - 1), string.sub(s, t) else out, carry = s, "" end
          if term ~= nil and state == 0 then
            state = 1
            mark("end", "complete")
          end
        end
      end
      if #out > 0 then model_seen = meter(out, use, model_seen) end
      if key and string.find(out, key, 1, true) then out = plain_replace(out, key, "[redacted]") end
      if out ~= raw then chunk:setBytes(out) end
    end
  end
  if last == nil then return end
  if state == 0 then  -- an unfinished last line is half an event: the error event replaces it
    last:setBytes(out .. numbered(p.cut, seq))
    mark("end", "cut")
  elseif state == 1 and #carry > 0 then  -- the terminal event's last line, unfinished: relayed
    meter(carry, use, model_seen)
    if key and string.find(carry, key, 1, true) then carry = plain_replace(carry, key, "[redacted]") end
    last:setBytes(out .. carry)
  end
end
