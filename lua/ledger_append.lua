-- The usage ledger's batch append: every record of a batch is added to the stream, or none is
-- (a script runs whole), so a batch the writer spills after a store error was never half written
-- and its replay cannot duplicate part of it.
-- KEYS[1] = the stream; ARGV[1] = MAXLEN bound (0: none, the archiver trims);
-- then per record: the number of field/value strings, then the strings.
local maxlen = tonumber(ARGV[1])
local i = 2
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
return added
