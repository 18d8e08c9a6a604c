-- Replace a reservation with real usage and charge real spend.
-- KEYS[1] reservation record, KEYS[2i] / KEYS[2i + 1] window hash / spend hash of scope i.
-- ARGV: window_ms, N, actual_tokens, cost_nusd, mode ('r' reserved, 'u' admitted while the store
--       was down: charge everything now, 'c' cancel: the client gave up on a reserve call that may
--       still run later), release (1 = also give the request back), spend_ttl_ms.
-- Returns {status}: settled | expired (record gone: spend only) | duplicate | unreserved | cancelled.
local window_ms, nb, actual = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local cost, mode, release, spend_ttl = tonumber(ARGV[4]), ARGV[5], ARGV[6] == '1', tonumber(ARGV[7])
local ns = (#KEYS - 1) / 2
local g = window_ms / nb
local now = now_ms()
local cur = math.floor(now / g)
local lo = cur - nb
local ttl = window_ms + g + 1000

if mode == 'c' then
  local rec = redis.call('GET', KEYS[1])
  if not rec then
    -- The reserve has not run (yet): leave a tombstone so that it never will.
    redis.call('SET', KEYS[1], 'cancelled', 'PX', window_ms * 10)
    return {'cancelled'}
  end
  if rec == 'settled' or rec == 'cancelled' then return {'duplicate'} end
  -- It ran after all: undo it completely.
  mode, actual, cost, release = 'r', 0, 0, true
end

local status, bucket, reserved = 'unreserved', nil, 0
if mode == 'r' then
  local rec = redis.call('GET', KEYS[1])
  if rec == 'settled' or rec == 'cancelled' then return {'duplicate'} end
  if not rec then
    status = 'expired'
  else
    status = 'settled'
    local sp = string.find(rec, ' ', 1, true)
    bucket, reserved = tonumber(string.sub(rec, 1, sp - 1)), tonumber(string.sub(rec, sp + 1))
    redis.call('SET', KEYS[1], 'settled', 'KEEPTTL')
  end
end

for i = 1, ns do
  local wkey, skey = KEYS[2 * i], KEYS[2 * i + 1]
  if status ~= 'expired' then
    local sr, st, newest = window(wkey, lo, true)
    if status == 'unreserved' then
      if actual > 0 or not release then add(wkey, cur, release and 0 or 1, actual, sr, st, newest, ttl) end
    elseif newest and bucket >= lo then
      add(wkey, bucket, release and -1 or 0, actual - reserved, sr, st, newest, ttl)
    elseif actual > reserved then
      -- The reservation already aged out of the window: only the overshoot still counts, now.
      add(wkey, cur, 0, actual - reserved, sr, st, newest, ttl)
    end
  end
  if cost > 0 then
    local dfield, mfield = periods(now)
    for _, f in ipairs(redis.call('HKEYS', skey)) do
      if f ~= dfield and f ~= mfield then redis.call('HDEL', skey, f) end
    end
    redis.call('HINCRBY', skey, dfield, cost)
    redis.call('HINCRBY', skey, mfield, cost)
    redis.call('PEXPIRE', skey, spend_ttl)
  end
end
return {status}
