-- Read-only usage of several scopes of one tenant.
-- KEYS[2i - 1] / KEYS[2i] window hash / spend hash of scope i. ARGV: window_ms, N.
-- Returns {day field, month field, then per scope requests, tokens, spent_day_nusd, spent_month_nusd, reset_ms}.
local window_ms, nb = tonumber(ARGV[1]), tonumber(ARGV[2])
local g = window_ms / nb
local now = now_ms()
local lo = math.floor(now / g) - nb
local dfield, mfield = periods(now)
local out = {dfield, mfield}
for i = 1, #KEYS / 2 do
  local sr, st, newest = window(KEYS[2 * i - 1], lo, false)
  local spent = redis.call('HMGET', KEYS[2 * i], dfield, mfield)
  out[#out + 1] = sr
  out[#out + 1] = st
  out[#out + 1] = tonumber(spent[1]) or 0
  out[#out + 1] = tonumber(spent[2]) or 0
  out[#out + 1] = newest and math.ceil((newest + nb + 1) * g - now) or 0
end
return out
