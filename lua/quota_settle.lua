-- Replace a reservation with real usage and charge real spend.
-- KEYS[1] reservation record, KEYS[2i] / KEYS[2i + 1] window hash / spend hash of scope i.
-- ARGV: window_ms, N, actual_tokens, cost_nusd, mode ('r' reserved, 'u' admitted while the store
--       was down: charge everything now, 'c' cancel: the client gave up on a reserve call that may
--       still run later, 'a' adjust: see below), release (requests given back: 0, or 1 when the
--       provider was never reached), spend_ttl_ms.
-- Mode 'a' (sidegate/features/quota/lease.py) adds signed deltas to bucket ARGV[8] of every scope: ARGV[3]
-- tokens and -ARGV[6] requests (the true-ups of requests admitted from a lease), and charges
-- ARGV[4]; KEYS[1] is then the batch's id, so a retried batch counts once. A lease itself ends
-- like a request, mode 'r' on its record ('bucket tokens requests'), giving back what it did not
-- use (release = its unused requests).
-- Returns {status}: settled | expired (record gone: spend only) | duplicate | unreserved | cancelled
-- | adjusted.
local window_ms, nb, actual = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local cost, mode, release_n, spend_ttl = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
local release = release_n > 0
local ns = (#KEYS - 1) / 2
local g = window_ms / nb
local now = now_ms()
local cur = math.floor(now / g)
local lo = cur - nb
local ttl = window_ms + g + 1000

local undo = false
if mode == 'c' then
  local rec = redis.call('GET', KEYS[1])
  if not rec then
    -- The reserve has not run (yet): leave a tombstone so that it never will.
    redis.call('SET', KEYS[1], 'cancelled', 'PX', window_ms * 10)
    return {'cancelled'}
  end
  if rec == 'settled' or rec == 'cancelled' then return {'duplicate'} end
  -- It ran after all: undo it completely.
  mode, actual, cost, undo = 'r', 0, 0, true
end

local status, bucket, reserved = 'unreserved', nil, 0
if mode == 'r' then
  local rec = redis.call('GET', KEYS[1])
  if rec == 'settled' or rec == 'cancelled' then return {'duplicate'} end
  if not rec then
    status = 'expired'
  else
    status = 'settled'
    local f = {}
    for w in string.gmatch(rec, '%d+') do f[#f + 1] = tonumber(w) end
    bucket, reserved = f[1], f[2]
    if undo then release_n, release = f[3] or 1, true end
    redis.call('SET', KEYS[1], 'settled', 'KEEPTTL')
  end
elseif mode == 'a' then
  -- Kept longer than a batch is retried (~2 min, QuotaStore._retry_later).
  if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', math.max(window_ms * 10, 600000)) then return {'duplicate'} end
  status, bucket, reserved = 'adjusted', tonumber(ARGV[8]), 0
end

for i = 1, ns do
  local wkey, skey = KEYS[2 * i], KEYS[2 * i + 1]
  if status ~= 'expired' then
    local sr, st, newest = window(wkey, lo, true)
    if status == 'unreserved' then
      if actual > 0 or not release then add(wkey, cur, release and 0 or 1, actual, sr, st, newest, ttl) end
    elseif newest and bucket >= lo then
      add(wkey, bucket, -release_n, actual - reserved, sr, st, newest, ttl)
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
