"""One shipper per consumer name: a lease in the store (``<stream>:ship:<group>:<consumer>``).

The shipper's exactly-once argument needs its pending list to hold ONE batch, its own. Two
shippers under the same name (the default is the host name: `sidegate ledger ship` run by hand on
the host where `sidegate up` runs one) share that list: one re-sends, as "its own pending batch",
the entries the other is still gathering into a batch, under a token for fewer ids, and the other
then inserts them again under its own token. So a shipper holds the lease while it ships; a second
one under the same name waits until it is free.

The lease is kept alive every ``TTL_MS / 3`` by a task beside the shipper and released on a stop,
so a restart takes it at once. A holder that was killed: on the same host, its process id is
checked (with its start time: a new process may get the same id) and a dead holder's lease taken
over at once; elsewhere it expires after ``TTL_MS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import RedisError

from sidegate.features.ledger.record import as_text

log = logging.getLogger("sidegate.ledger.ship")

TTL_MS = 30_000
# Take the lease if it is free, ours, or held by exactly ARGV[3] (a dead holder): 1, else the holder.
_TAKE = """
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] and cur ~= ARGV[3] then
  return cur
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class ConsumerLease:
    def __init__(self, redis: Redis, stream: str, group: str, consumer: str) -> None:
        self.redis = redis
        self.key = f"{stream}:ship:{group}:{consumer}"
        self.host = os.uname().nodename
        self.value = f"{self.host} {_process_id(os.getpid())} {secrets.token_hex(8)}"
        self.held = False
        self._keeper: asyncio.Task[None] | None = None
        self._warned = ""

    async def take(self) -> bool:
        """Take (or renew) the lease; False while another live shipper holds it."""
        got = await self.redis.eval(_TAKE, 1, self.key, self.value, TTL_MS, "")
        if got != 1 and _dead_here(as_text(got), self.host):
            got = await self.redis.eval(_TAKE, 1, self.key, self.value, TTL_MS, as_text(got))
        self.held = got == 1
        if not self.held and self._warned != as_text(got):
            self._warned = as_text(got)
            log.warning("ledger shipper: another shipper (%s) ships as consumer %s: waiting for it to "
                        "stop (give each shipper its own ledger_ship.consumer)", self._warned, self.key)  # fmt: skip
        if self.held and (self._keeper is None or self._keeper.done()):
            self._keeper = asyncio.get_running_loop().create_task(self._keep(), name="sidegate-ship-lease")
        return self.held

    async def _keep(self) -> None:
        while self.held:
            await asyncio.sleep(TTL_MS / 3000)
            with contextlib.suppress(RedisError, OSError):  # the store is away: so is every shipper's work
                got = await self.redis.eval(_TAKE, 1, self.key, self.value, TTL_MS, "")
                self.held = got == 1

    async def release(self) -> None:
        self.held = False
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
            self._keeper = None
        with contextlib.suppress(RedisError, OSError):
            await self.redis.eval(_RELEASE, 1, self.key, self.value)


def _process_id(pid: int) -> str:
    """``pid:start``: the process id and its start time (clock ticks since boot, /proc), so a later
    process given the same id (a restarted container's pid 1) is not taken for the holder."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return str(pid)
    return f"{pid}:{stat.rsplit(')', 1)[1].split()[19]}"


def _dead_here(holder: str, host: str) -> bool:
    """Whether ``holder`` (a lease value) is a process of this host that no longer runs."""
    parts = holder.split(" ")
    if len(parts) != 3 or parts[0] != host:
        return False
    pid, _, started = parts[1].partition(":")
    if not pid.isdigit():
        return False
    if started:  # the holder's start time is known: is that very process still there?
        return _process_id(int(pid)) != parts[1]
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, another user's
        return False
    return False
