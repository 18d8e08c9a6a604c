-- Shared helpers for the quota scripts. sidegate/features/quota/scripts.py prepends this file to every
-- quota_*.lua script before SCRIPT LOAD, so each loaded script is self-contained.
--
-- Sliding window layout: one hash per scope with
--   r<b>, t<b>  requests / tokens admitted in sub-bucket b (b = floor(now_ms / g), g = window / N)
--   sr, st      running sums of the live buckets
--   o, n        oldest bucket that may still hold a field, newest bucket written
-- A bucket b counts while the current bucket is <= b + N, i.e. for at least one full window.
-- Spend layout: one hash per scope with d<day> and m<yyyymm> in nano-USD (UTC calendar periods).

-- Old Redis (< 5) replicates scripts verbatim, which is wrong for a script that reads TIME and
-- then writes; effects replication fixes that. Redis 7 / Valkey make this a no-op (or drop it).
if redis.replicate_commands then pcall(redis.replicate_commands) end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Live sums of a window hash; with write=true also drops the buckets that aged out.
-- Returns sr, st, newest (nil when the window is empty).
local function window(key, lo, write)
  local v = redis.call('HMGET', key, 'o', 'n', 'sr', 'st')
  local newest = tonumber(v[2])
  if not newest then return 0, 0, nil end
  if newest < lo then
    if write then redis.call('DEL', key) end
    return 0, 0, nil
  end
  local oldest = tonumber(v[1]) or lo
  local sr, st = tonumber(v[3]) or 0, tonumber(v[4]) or 0
  if oldest < lo then
    -- newest - oldest <= N always holds (each write prunes first), so this loop is bounded by N.
    local f = {}
    for b = oldest, lo - 1 do
      f[#f + 1] = 'r' .. b
      f[#f + 1] = 't' .. b
    end
    local vals = redis.call('HMGET', key, unpack(f))
    for i = 1, #f, 2 do
      sr = sr - (tonumber(vals[i]) or 0)
      st = st - (tonumber(vals[i + 1]) or 0)
    end
    if write then
      redis.call('HDEL', key, unpack(f))
      redis.call('HSET', key, 'o', lo, 'sr', sr, 'st', st)
    end
  end
  return sr, st, newest
end

-- Add dr requests and dt tokens to bucket b (b >= lo) of a pruned window hash, never letting a
-- bucket go below zero. Returns the new sums.
local function add(key, b, dr, dt, sr, st, newest, ttl_ms)
  if newest then
    if dr < 0 or dt < 0 then
      local v = redis.call('HMGET', key, 'r' .. b, 't' .. b)
      dr = math.max(dr, -(tonumber(v[1]) or 0))
      dt = math.max(dt, -(tonumber(v[2]) or 0))
    end
  else
    dr, dt = math.max(dr, 0), math.max(dt, 0)
  end
  if dr ~= 0 then redis.call('HINCRBY', key, 'r' .. b, dr) end
  if dt ~= 0 then redis.call('HINCRBY', key, 't' .. b, dt) end
  sr, st = sr + dr, st + dt
  if newest then
    redis.call('HSET', key, 'sr', sr, 'st', st)
    if b > newest then redis.call('HSET', key, 'n', b) end
  else
    redis.call('HSET', key, 'o', b, 'n', b, 'sr', sr, 'st', st)
  end
  redis.call('PEXPIRE', key, ttl_ms)
  return sr, st
end

-- Days since 1970-01-01 -> year, month, day, days in that month (proleptic Gregorian, UTC).
local function civil(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  local dim = ({31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31})[m]
  if m == 2 and y % 4 == 0 and (y % 100 ~= 0 or y % 400 == 0) then dim = 29 end
  return y, m, d, dim
end

-- Budget periods at ms: day field, month field, ms left in the day, ms left in the month.
local function periods(ms)
  local day = math.floor(ms / 86400000)
  local y, m, d, dim = civil(day)
  return 'd' .. day, 'm' .. (y * 100 + m), (day + 1) * 86400000 - ms, (day + dim - d + 1) * 86400000 - ms
end
