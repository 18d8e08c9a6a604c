-- The usage ledger's batch append: every record of a batch is added to the stream, or none is
-- (a script runs whole), and a writer's batch is applied once: its number is kept per writer, so a
-- batch sent again (its first reply lost to a timeout, then spilled and replayed; a replay repeated
-- after a crash) is skipped. Writers number their batches in the order they are to appear.
-- KEYS[1] = the stream; KEYS[2] = the hash of each writer's last applied batch number;
-- ARGV[1] = MAXLEN bound (0: none, the archiver trims); ARGV[2] = writer id; ARGV[3] = batch number;
-- then per record: the number of field/value strings, then the strings.
-- Returns the records added (0 for a batch already applied).
local last = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
if tonumber(ARGV[3]) <= last then
  return 0
end
local maxlen = tonumber(ARGV[1])
local i = 4
local added = 0
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  local cmd
  if maxlen > 0 then
    cmd = {'XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*'}
  else
    cmd = {'XADD', KEYS[1], '*'}
  end
  for j = i + 1, i + n do
    cmd[#cmd + 1] = ARGV[j]
  end
  redis.call(unpack(cmd))
  i = i + n + 1
  added = added + 1
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return added
