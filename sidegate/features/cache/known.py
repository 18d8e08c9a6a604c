"""Which exact-cache entries the store holds, known in this process (Redis client-side tracking).

A lookup whose entry is not in the store costs a store round trip that finds nothing; on the
gateway's check that round trip is the only wait of a busy tenant's request (quota leases admit it
locally), and waiting costs more than the lookup itself (a loop turn, a read, the store's wake-up:
docs/performance.md). So the cache keeps a local set of the entries that may exist, and asks the
store only for those:

- it adds the entries this process fills, when it fills them;
- the store reports every write to a key under the cache's prefix by any *other* client (another
  gateway's fill, an expiry, an eviction, a delete): the process's store connection turns tracking
  on (`CLIENT TRACKING ON REDIRECT <listener> BCAST PREFIX <prefix> NOLOOP`: not its own writes,
  which would cost a report per fill) and a listening connection takes the reports (`SUBSCRIBE
  __redis__:invalidate`). Each reported key is added (it *may* exist); a FLUSHALL clears the set;
- once the tracking is on, the entries already in the store are read (SCAN) and a probe key is
  written by another connection; when its report arrives the set is trusted. The same happens
  again whenever either connection is new (reports may have been lost in between);
- an entry the store turns out not to have (a GET answering nil) is dropped from the set.

So the set holds every entry the store holds, plus some it no longer holds (which cost a GET, as
before). The one exception is a short window: another process's fill is known here when the store's
report arrives (a millisecond or so), so a question asked in that window is a miss and the
provider answers it (the fill then writes the same entry again).

Until the set is trusted (at start, while either connection is down, when the store refuses
tracking or does not report, when the URL is not a plain `redis://` one, or past `max_keys`
entries) every lookup asks the store, as without it. Entries stay at least `keep_s` (the longest
cache TTL) and at most twice that: two generations of hashes, the older dropped as a whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from sidegate import metrics
from sidegate.store import TrackedConnection

log = logging.getLogger(__name__)

CHANNEL = b"__redis__:invalidate"
HEARTBEAT_S = 5.0
"""A silent listening connection is pinged after this long, and dropped if still silent after as
long again (a half-open connection would otherwise stop the reports without anyone noticing)."""
PROBE_TIMEOUT_S = 2.0
"""How long the store may take to report the probe write."""
PROBE_TRIES = 3
"""Probes in a row without a report before the index is turned off for good."""
RECENT_S = 10.0
"""A nil GET does not drop a key added (filled or reported) in the last RECENT_S to twice that: the
GET may have been answered before that write (a lookup's GET is bounded by `exact_timeout_ms` ≤ 5 s)."""
_CONNECT_TIMEOUT_S = 2.0
_SCAN_COUNT = 1000
_REFUSALS = ("unknown command", "unknown subcommand", "noperm", "syntax", "not supported", "resp3")
"""Error replies to the setup that mean the store will not track for us (anything else is retried)."""


class _NoReport(Exception):
    """The probe write was not reported in time."""


class _Refused(Exception):
    """The store refused the tracking command or the subscription."""


class _Generations:
    """A set of key hashes whose members stay between `period_s` and twice that: two generations,
    the older dropped as a whole (no time kept per member)."""

    def __init__(self, period_s: float) -> None:
        self.period_s = period_s
        self.new: set[int] = set()
        self.old: set[int] = set()
        self._rotate_at = 0.0

    def __contains__(self, h: int) -> bool:
        return h in self.new or h in self.old

    def __len__(self) -> int:
        return len(self.new) + len(self.old)

    def add(self, h: int, now: float) -> None:
        if now >= self._rotate_at:
            self.old, self.new = self.new, set()
            self._rotate_at = now + self.period_s
        self.new.add(h)

    def discard(self, h: int) -> None:
        self.new.discard(h)
        self.old.discard(h)

    def clear(self) -> None:
        self.new, self.old = set(), set()


class KnownKeys:
    """The local set of cache keys the store may hold (see the module docstring)."""

    def __init__(self, prefix: str, keep_s: float, max_keys: int = 500_000) -> None:
        self.prefix = prefix
        self.keep_s = keep_s
        self.max_keys = max_keys
        self.synced = False
        """True while the set is trusted."""
        self.overflowed = False
        self.reported = 0
        """Keys the store reported (a test's and an operator's view of the traffic)."""
        self._keys = _Generations(keep_s)
        self._recent = _Generations(RECENT_S)
        """Keys written (filled or reported) in the last RECENT_S to twice that: a nil GET keeps them."""
        self._probe_n = 0
        self._trusted = False
        """Trusted at least once since the last retry (the retry back-off starts over)."""
        self._loads_at: list[float] = []
        self._task: asyncio.Task[None] | None = None
        self._conn: TrackedConnection | None = None
        self._probe = ""
        self._probed = asyncio.Event()
        self._reload = asyncio.Event()

    # -- the set ----------------------------------------------------------------------------
    def may_exist(self, key: str) -> bool:
        """False only when the store certainly does not hold `key` (the full store key)."""
        return not self.synced or hash(key) in self._keys

    def add(self, key: str, recent: bool = True) -> None:
        """`key` may exist (`recent`: it was written just now, not read from the store's listing)."""
        if self.overflowed:
            return
        now = asyncio.get_running_loop().time()
        h = hash(key)
        self._keys.add(h, now)
        if recent:
            self._recent.add(h, now)
        if len(self._keys) > self.max_keys:
            self.overflowed = True  # a bigger store than this process may mirror: ask it every time
            self._set_synced(False)
            self._clear()
            if self._task is not None:
                self._task.cancel()  # no more tracking (its end turns the store connection's off)
            log.warning("cache key index past %d keys: every exact lookup asks the store", self.max_keys)

    def discard(self, key: str) -> None:
        """The store answered nil for `key`: drop it, unless it was written since the GET may have
        been answered (another process's fill reported meanwhile, or this one's own)."""
        h = hash(key)
        if h not in self._recent:
            self._keys.discard(h)

    def _clear(self) -> None:
        self._keys.clear()
        self._recent.clear()

    def _set_synced(self, value: bool) -> None:
        self.synced = value and not self.overflowed
        metrics.cache_index_synced(self.synced)

    # -- keeping it in step with the store ---------------------------------------------------
    def start(self, conn: TrackedConnection, scan: Redis) -> None:
        """Track the store of `conn` (the process's store connection, whose writes are not reported)
        in the background; `scan`, a redis-py client on the same database, reads the entries already
        there and writes the probe (from another connection: the tracked one's own are not reported)."""
        self._conn = conn
        conn.on_connection = self._store_connection
        self._task = asyncio.get_running_loop().create_task(self._run(conn, scan))

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._conn is not None:
            self._conn.on_connection = None
        self._set_synced(False)

    def _store_connection(self, up: bool) -> None:
        """The store client's connection was lost, or a new one is up: reports may be missing (a new
        one brings them again, then the store is read again)."""
        self._set_synced(False)
        if up:
            self._reload.set()

    async def _run(self, conn: TrackedConnection, scan: Redis) -> None:
        backoff, unreported = 0.5, 0
        try:
            while not self.overflowed:
                try:
                    await self._session(conn, scan)
                except _Refused as exc:  # e.g. Dragonfly (no BCAST/PREFIX/REDIRECT), Redis < 6, an ACL
                    log.warning("cache key index off, the store refused tracking: %s", exc)
                    return
                except _NoReport:
                    unreported += 1
                    if unreported >= PROBE_TRIES:
                        log.warning("cache key index off: the store did not report writes (%d probes in a row)",
                                    unreported)  # fmt: skip
                        return
                except (OSError, EOFError, TimeoutError, RedisError, hiredis.ProtocolError) as exc:
                    log.info("cache key index: tracking interrupted (%s); retrying", type(exc).__name__)
                except Exception:  # a bug here must not stop the retries (lookups ask the store meanwhile)
                    log.exception("cache key index failed; retrying")
                finally:
                    self._set_synced(False)
                    self._clear()
                if self._trusted:  # the last session was trusted at least once: start over
                    backoff, unreported, self._trusted = 0.5, 0, False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
        finally:
            self._untrack(conn)

    def _untrack(self, conn: TrackedConnection) -> None:
        """The store connection stops tracking (now, best effort, and on its next connections)."""
        conn.tracking = None
        if conn.connected:
            loop = asyncio.get_running_loop()
            done = loop.create_task(conn.command("CLIENT", "TRACKING", "OFF", timeout_s=_CONNECT_TIMEOUT_S))
            done.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _session(self, conn: TrackedConnection, scan: Redis) -> None:
        async with asyncio.timeout(_CONNECT_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(conn.host, conn.port)
        try:
            parser = hiredis.Reader(replyError=ResponseError)

            async def reply(*args: Any) -> Any:
                writer.write(hiredis.pack_command(args))
                while (got := parser.gets()) is False:
                    async with asyncio.timeout(_CONNECT_TIMEOUT_S):
                        data = await reader.read(65536)
                    if not data:
                        raise EOFError
                    parser.feed(data)
                if isinstance(got, ResponseError):
                    raise got
                return got

            if conn.password:
                await reply("AUTH", conn.password)
            try:
                listener = await reply("CLIENT", "ID")
                await reply("SUBSCRIBE", CHANNEL)
                async with asyncio.timeout(_CONNECT_TIMEOUT_S):
                    await conn.track(("CLIENT", "TRACKING", "ON", "REDIRECT", listener, "BCAST", "PREFIX", self.prefix,
                                     "NOLOOP"))  # fmt: skip
            except ResponseError as exc:
                if any(r in str(exc).lower() for r in _REFUSALS):
                    raise _Refused(str(exc)) from None
                raise
            loop = asyncio.get_running_loop()
            listen = loop.create_task(self._listen(reader, writer, parser))
            try:
                while True:
                    await self._pace_loads()
                    self._reload.clear()
                    load = loop.create_task(self._load(conn, scan, f"{self.prefix}~probe:{listener}:"))
                    try:
                        await asyncio.wait({listen, load}, return_when=asyncio.FIRST_COMPLETED)
                        if listen.done():
                            listen.result()  # raises why it ended
                        load.result()  # raises when the store was not read or did not report
                    finally:
                        load.cancel()
                        if load.done() and not load.cancelled():
                            load.exception()  # (retrieved: the listener's end is what is raised)
                    # Trusted (unless reloading): until the listener fails or the store client reconnects.
                    reload = loop.create_task(self._reload.wait())
                    try:
                        await asyncio.wait({listen, reload}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        reload.cancel()
                    if listen.done():
                        listen.result()
            finally:
                listen.cancel()
        finally:
            writer.close()

    async def _pace_loads(self) -> None:
        """Reading the whole store again at every reconnect of a struggling store would add to its
        load: at most 3 reads a minute, the rest wait (untrusted, so lookups ask the store)."""
        now = asyncio.get_running_loop().time()
        self._loads_at = [t for t in self._loads_at if now - t < 60.0]
        if len(self._loads_at) >= 3:
            await asyncio.sleep(60.0 - (now - self._loads_at[0]))
        self._loads_at.append(asyncio.get_running_loop().time())

    async def _load(self, conn: TrackedConnection, scan: Redis, probe_prefix: str) -> None:
        """The entries the store held before its reports began, then a probe write by another
        connection: its report shows that the store really reports writes (a store or proxy could
        take the command and never report, and the index would miss every other gateway's fill).
        Trusted only if the store connection (whose tracking brings the reports) stayed the same."""
        self._set_synced(False)
        metrics.cache_index_load()
        connection = conn.connections
        async for key in scan.scan_iter(match=self.prefix + "*", count=_SCAN_COUNT):
            self.add(key.decode("utf-8", "replace") if isinstance(key, bytes) else key, recent=False)
        self._probe_n += 1
        self._probe = f"{probe_prefix}{self._probe_n}"
        self._probed.clear()
        await scan.set(self._probe, b"", px=int(PROBE_TIMEOUT_S * 1000))
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                await self._probed.wait()
        except TimeoutError:
            if conn.connected and conn.connections == connection:
                raise _NoReport from None
            raise ConnectionError("the store connection changed during the probe") from None
        if conn.connected and conn.connections == connection and not self._reload.is_set():
            self._set_synced(True)
            self._trusted = True
        else:
            self._reload.set()  # read again once the store connection is back

    async def _listen(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, parser: Any) -> None:
        pinged = False
        while True:
            try:
                async with asyncio.timeout(HEARTBEAT_S):
                    data = await reader.read(65536)
            except TimeoutError:
                if pinged:
                    raise
                writer.write(hiredis.pack_command(("PING",)))
                pinged = True
                continue
            if not data:
                raise EOFError
            pinged = False
            parser.feed(data)
            while (msg := parser.gets()) is not False:
                self._report(msg)

    def _report(self, msg: Any) -> None:
        if isinstance(msg, ResponseError):
            raise msg
        if not isinstance(msg, list) or len(msg) < 3 or msg[0] != b"message" or msg[1] != CHANNEL:
            return  # the subscription's confirmation, a PING's answer
        keys = msg[2]
        if keys is None:  # a FLUSHALL, or a FLUSHDB of *any* database: read the store again
            self._set_synced(False)
            self._reload.set()
            return
        self.reported += len(keys)
        for key in keys:
            name = key.decode("utf-8", "replace")
            if name == self._probe:
                self._probed.set()
            self.add(name)
