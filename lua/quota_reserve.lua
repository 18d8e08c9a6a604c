-- Atomic, all-or-nothing admission of one request across several scopes.
-- KEYS[1] reservation record, KEYS[2] the tenant's scope index set,
-- KEYS[1 + 2i] / KEYS[2 + 2i] window hash / spend hash of scope i.
-- ARGV: window_ms, N, tokens, reservation_ttl_ms, index_ttl_ms, requests, share, min_requests,
--       min_tokens, then per scope: name, rpm, tpm, daily_nusd, monthly_nusd (-1 = no limit).
--       A request: requests 1, share 0. A lease (sidegate/features/quota/lease.py): at most `requests` and
--       `tokens`, each cut to `share` of what every limited scope has left; refused (reason
--       'lease') when that is less than min_requests / min_tokens.
-- Returns {admitted, reason, scope index, retry_ms, bucket, then per scope rem_r, rem_t, reset_ms}
-- with -1 for "no limit" / "never"; an admitted lease appends its requests and tokens.
-- A reserve the client already gave up on (timed out and cancelled, see quota_settle.lua): no-op.
if redis.call('GET', KEYS[1]) == 'cancelled' then return {0, 'cancelled', 0, -1, -1} end

local window_ms, nb, tokens = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local res_ttl, index_ttl, count = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local share, min_count, min_tokens = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local H = 9
local ns = (#ARGV - H) / 5
local g = window_ms / nb
local now = now_ms()
local cur = math.floor(now / g)
local lo = cur - nb
local dfield, mfield, day_left, month_left = periods(now)

-- Time until enough of the oldest buckets age out that sum - freed + need <= limit.
local function wait_ms(key, kind, sum, need, limit)
  local f = {}
  for b = lo, cur do f[#f + 1] = kind .. b end
  local vals = redis.call('HMGET', key, unpack(f))
  local freed = 0
  for i = 1, #f do
    freed = freed + (tonumber(vals[i]) or 0)
    if sum - freed + need <= limit then return (lo + i + nb) * g - now end
  end
  return window_ms + g
end

local admit, reason, who, retry = 1, '', 0, 0
local function refuse(why, i, ms)
  if reason == 'too_large' then return end
  if why == 'too_large' or admit == 1 or ms > retry then
    admit, reason, who, retry = 0, why, i, ms
  end
end

local state = {}
for i = 1, ns do
  local a = H + (i - 1) * 5
  local sr, st, newest = window(KEYS[1 + 2 * i], lo, true)
  state[i] = {sr, st, newest, tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])}
end
if share > 0 then
  -- A lease takes at most `share` of what is left, now (not of what was left some time ago).
  for i = 1, ns do
    local s = state[i]
    if s[4] >= 0 then count = math.min(count, math.floor(share * (s[4] - s[1]))) end
    if s[5] >= 0 then tokens = math.min(tokens, math.floor(share * (s[5] - s[2]))) end
  end
  if count < min_count or tokens < min_tokens then return {0, 'lease', 0, -1, cur} end
end

for i = 1, ns do
  local a = H + (i - 1) * 5
  local s = state[i]
  local sr, st, rpm, tpm = s[1], s[2], s[4], s[5]
  local dusd, musd = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  local wkey, skey = KEYS[1 + 2 * i], KEYS[2 + 2 * i]
  if rpm >= 0 and sr + count > rpm then
    if rpm == 0 then refuse('rpm', i, window_ms + g) else refuse('rpm', i, wait_ms(wkey, 'r', sr, count, rpm)) end
  end
  if tpm >= 0 then
    if tokens > tpm then
      refuse('too_large', i, -1)
    elseif st + tokens > tpm then
      refuse('tpm', i, wait_ms(wkey, 't', st, tokens, tpm))
    end
  end
  if dusd >= 0 or musd >= 0 then
    local spent = redis.call('HMGET', skey, dfield, mfield)
    if dusd >= 0 and (tonumber(spent[1]) or 0) >= dusd then refuse('daily_usd', i, day_left) end
    if musd >= 0 and (tonumber(spent[2]) or 0) >= musd then refuse('monthly_usd', i, month_left) end
  end
end

local out = {admit, reason, who, math.ceil(retry), cur}
local ttl = window_ms + g + 1000
for i = 1, ns do
  local s = state[i]
  local sr, st, newest = s[1], s[2], s[3]
  if admit == 1 then
    sr, st = add(KEYS[1 + 2 * i], cur, count, tokens, sr, st, newest, ttl)
    newest = cur
  end
  out[#out + 1] = s[4] >= 0 and math.max(s[4] - sr, 0) or -1
  out[#out + 1] = s[5] >= 0 and math.max(s[5] - st, 0) or -1
  out[#out + 1] = newest and math.ceil((newest + nb + 1) * g - now) or 0
end
if admit == 1 then
  -- 'bucket tokens' (a lease adds its request count: 'bucket tokens requests')
  redis.call('SET', KEYS[1], cur .. ' ' .. tokens .. (count ~= 1 and ' ' .. count or ''), 'PX', res_ttl)
  local names = {}
  for i = 1, ns do names[i] = ARGV[H + (i - 1) * 5 + 1] end
  if ns > 0 then redis.call('SADD', KEYS[2], unpack(names)) end
  redis.call('PEXPIRE', KEYS[2], index_ttl)
  if share > 0 then
    out[#out + 1] = count
    out[#out + 1] = tokens
  end
end
return out
