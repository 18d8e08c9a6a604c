"""The store as a Redis/Valkey Cluster: `redis+cluster://[:password@]host:port` (one or more seed
nodes, comma-separated: `redis+cluster://a:7000,b:7000`).

The lean client stays one connection per node (a :class:`LeanStore` each, auto-pipelined as on one
server); this class only picks the node. It learns the slot map with `CLUSTER SLOTS` on first use,
sends each command to the node of its key's slot, and follows the cluster's redirects:

- `MOVED <slot> <host:port>`: the slot now lives elsewhere for good; the command goes there, and
  the whole map is read again (a resharding or failover usually moves more than one slot);
- `ASK <slot> <host:port>`: the slot is being migrated and this key already moved; the command goes
  there once, right after `ASKING` on the same connection (both leave in the same write).

A command whose keys hash to different slots (a script over two tenants' keys, say) is refused
before it leaves, with :class:`CrossSlotError` naming the command (never the keys, which may name
tenants): every multi-key operation of the request path keeps its keys in one slot (the quota keys
share the tenant's `{...}` hash tag; the ledger's writer hash is `{<stream>}:writers`).

The single-server path pays nothing for this: `open_store` builds this class only for a cluster
URL, and :class:`LeanStore` has no cluster branch (docs/deployment.md, "A store cluster", has the
micro-benchmark). Key tracking (`store.tracked`) is None here: a `CLIENT TRACKING` connection sees
one node's keys only, so the cache's local key index is switched off (features/cache/known.py logs it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from sidegate.config.storeurl import parse_cluster_url
from sidegate.store.lean import _NEVER, LeanStore, _retrieved
from sidegate.store.script import ScriptCalls, _left

log = logging.getLogger("sidegate.store")

SLOTS = 16384
MAX_REDIRECTS = 5
"""A command redirected more often than this fails (the map changes faster than it is read)."""
REFRESH_EVERY_S = 0.2
"""While a node keeps failing, the slot map is read again at most this often. A failover takes the
cluster its node timeout plus an election (about 1-2 s at a 1 s `cluster-node-timeout`); reading the
map on every failed command would send one CLUSTER SLOTS per request to the surviving nodes."""

_NO_KEY = frozenset({b"PING", b"INFO", b"CLIENT", b"SCRIPT", b"CLUSTER", b"COMMAND", b"TIME", b"ECHO"})
_SUBCOMMAND_KEY = frozenset({b"XINFO", b"XGROUP", b"OBJECT", b"MEMORY"})
_SCRIPT_CALLS = frozenset({b"EVALSHA", b"EVAL", b"EVALSHA_RO", b"EVAL_RO", b"FCALL", b"FCALL_RO"})


class CrossSlotError(ResponseError):
    """A command's keys are in different hash slots: no one node of a cluster can run it."""


def cluster_client(url: str, socket_timeout_s: float = 1.0, max_connections: int = 256) -> Redis:
    """redis-py's cluster client for a `redis+cluster://` URL: it follows MOVED/ASK itself, sends
    SCRIPT LOAD to every primary, and refuses a cross-slot pipeline or transaction clearly. Typed as
    `Redis`: every caller uses only the commands both offer (the cluster client is not a subclass)."""
    from redis.asyncio.cluster import ClusterNode

    seeds, username, password = parse_cluster_url(url)
    rc = RedisCluster(
        startup_nodes=[ClusterNode(h, p) for h, p in seeds], username=username, password=password,
        max_connections=max_connections, socket_timeout=socket_timeout_s,
        socket_connect_timeout=socket_timeout_s, require_full_coverage=True,
    )  # fmt: skip
    return rc  # type: ignore[return-value]


_KEY_AT_1, _NONE, _SCRIPT, _KEY_AT_2 = 0, 1, 2, 3
_KINDS: dict[Any, int] = {}
"""Command name (as the caller spells it: str or bytes) -> where its key is; filled on first use
(the gateway sends a handful of distinct commands)."""


def _kind(name: Any) -> int:
    n = (name if isinstance(name, bytes) else str(name).encode()).upper()
    if n in _NO_KEY:
        return _NONE
    if n in _SCRIPT_CALLS:
        return _SCRIPT
    return _KEY_AT_2 if n in _SUBCOMMAND_KEY else _KEY_AT_1


def command_slot(args: Sequence[Any]) -> int | None:
    """The hash slot of a command's keys; None for a command without one (any node serves it).
    Raises CrossSlotError when its keys span slots."""
    kind = _KINDS.get(args[0])
    if kind is None:
        kind = _KINDS[args[0]] = _kind(args[0])
    if kind == _KEY_AT_1:
        return _slot(args[1]) if len(args) > 1 else None
    if kind == _NONE:
        return None
    if kind == _KEY_AT_2:
        return _slot(args[2]) if len(args) > 2 else None
    n = int(args[2])
    if n == 0:
        return None
    slot = _slot(args[3])
    for k in args[4 : 3 + n]:
        if _slot(k) != slot:
            raise CrossSlotError(
                f"CROSSSLOT {_name(args)}: its keys are in different hash slots of the store cluster"
            )
    return slot


def _slot(key: Any) -> int:
    return key_slot(key if isinstance(key, bytes) else str(key).encode())


def _addr(reply: str) -> tuple[int, tuple[str, int]]:
    """`MOVED 3999 127.0.0.1:6381` -> (3999, ("127.0.0.1", 6381))."""
    _, slot, addr = reply.split(" ", 2)
    host, _, port = addr.rpartition(":")
    return int(slot), (host.strip("[]"), int(port))


class ClusterStore(ScriptCalls):
    """A :class:`sidegate.store.protocol.Store` over a cluster: one :class:`LeanStore` per node."""

    tracked = None

    def __init__(self, redis: Redis, seeds: list[tuple[str, int]], password: str | None = None,
                 connect_timeout_s: float = 1.0, username: str | None = None):  # fmt: skip
        self.redis = redis
        self.seeds, self.password, self.connect_timeout_s = seeds, password, connect_timeout_s
        self.username = username
        self._nodes: dict[tuple[str, int], LeanStore] = {}
        self._slots: list[LeanStore | None] = [None] * SLOTS
        self._mapping: asyncio.Future[None] | None = None
        self._read_at = float("-inf")  # loop time the last map read started
        self._later: asyncio.TimerHandle | None = None  # a map read put off by REFRESH_EVERY_S
        self.map_reads = 0
        """How often the slot map was read (1 at start; more after MOVED)."""
        self.redirects = 0

    @classmethod
    def from_url(cls, url: str, redis: Redis, connect_timeout_s: float = 1.0) -> ClusterStore:
        seeds, username, password = parse_cluster_url(url)
        return cls(redis, seeds, password, connect_timeout_s, username)

    def node(self, addr: tuple[str, int]) -> LeanStore:
        found = self._nodes.get(addr)
        if found is None:
            found = self._nodes[addr] = LeanStore(
                self.redis, addr[0], addr[1], self.password, 0, self.connect_timeout_s, self.username
            )
        return found

    # -- the slot map ---------------------------------------------------------------------------
    async def _read_map(self) -> None:
        """`CLUSTER SLOTS` from the first node that answers: connected nodes first (a dead node,
        the reason for most reads, is not connected), then the other known nodes and the seeds (so a
        dead seed is passed over for a live node learnt from an earlier map)."""
        self._read_at = asyncio.get_running_loop().time()
        last: Exception | None = None
        known = sorted(self._nodes, key=lambda a: not self._nodes[a].connected)
        for addr in [*known, *(s for s in self.seeds if s not in self._nodes)]:
            try:
                reply = await self.node(addr).command("CLUSTER", "SLOTS", timeout_s=self.connect_timeout_s)
            except Exception as e:  # unreachable, timed out, not a cluster: try the next node
                last = e
                continue
            slots: list[LeanStore | None] = [None] * SLOTS
            for start, end, primary, *_replicas in reply:
                host = primary[0].decode() if isinstance(primary[0], bytes) else str(primary[0])
                owner = self.node((host or addr[0], int(primary[1])))
                slots[int(start) : int(end) + 1] = [owner] * (int(end) - int(start) + 1)
            self._slots = slots
            self.map_reads += 1
            owners = {id(n) for n in slots}
            idle = [a for a, n in self._nodes.items() if not n.connected and n._connecting is None]
            for gone in [a for a in idle if id(self._nodes[a]) not in owners]:
                del self._nodes[gone]  # a failed or replaced node: no longer tried first next time
            return
        raise last if last is not None else RuntimeError("no cluster seed node")

    async def _refresh(self) -> None:
        """Read the map once however many commands ask at the same time."""
        if self._mapping is None:
            self._mapping = asyncio.ensure_future(self._read_map())
        mapping = self._mapping
        try:
            await asyncio.shield(mapping)
        finally:
            if self._mapping is mapping and mapping.done():
                self._mapping = None

    def _refresh_soon(self) -> None:
        """A map read in the background: now, or REFRESH_EVERY_S after the last one started (one
        read at a time, and at most one waiting)."""
        if self._mapping is not None or self._later is not None:
            return
        loop = asyncio.get_running_loop()
        wait = self._read_at + REFRESH_EVERY_S - loop.time()
        if wait > 0:
            self._later = loop.call_later(wait, self._start_refresh)
        else:
            self._start_refresh()

    def _start_refresh(self) -> None:
        self._later = None
        if self._mapping is None:
            self._mapping = asyncio.ensure_future(self._read_map())
            self._mapping.add_done_callback(self._mapped)

    def _mapped(self, fut: asyncio.Future[None]) -> None:
        if self._mapping is fut:
            self._mapping = None
        if not fut.cancelled() and fut.exception() is not None:
            log.warning("store cluster: reading the slot map failed (%s)", type(fut.exception()).__name__)

    async def _owner(self, slot: int | None) -> LeanStore:
        if slot is None:
            for n in self._slots:
                if n is not None:
                    return n
            await self._refresh()
            for n in self._slots:
                if n is not None:
                    return n
            raise ResponseError("CLUSTERDOWN no node serves any slot")
        owner = self._slots[slot]
        if owner is None:
            await self._refresh()
            owner = self._slots[slot]
            if owner is None:
                raise ResponseError(f"CLUSTERDOWN hash slot {slot} is not served by any node")
        return owner

    # -- commands ---------------------------------------------------------------------------------
    async def command(self, *args: Any, timeout_s: float | None = None, lazy: bool = False) -> Any:
        try:
            return await self._command(args, timeout_s, lazy)
        except (RedisConnectionError, TimeoutError, OSError):
            # A node that stopped answering may have failed over (its replica now owns its slots)
            # or been replaced at a new address: only a fresh slot map finds its successor; a
            # MOVED reply never comes from a dead node. The command is not sent again: it may
            # have run before the connection broke (an INCRBY, a quota script), and a retry would
            # count it twice; the caller's own failure handling (fail open or closed) applies.
            self._refresh_soon()
            raise

    async def _command(self, args: tuple[Any, ...], timeout_s: float | None, lazy: bool) -> Any:
        slot = command_slot(args)
        node = self._slots[slot] if slot is not None else None
        if node is not None and node._proto is not None:
            # The common case, map known and node connected: straight onto its connection (one
            # coroutine, as on one server; LeanStore.command would add another and its checks).
            if timeout_s is None:
                try:
                    return await node._send(args, _NEVER, lazy)
                except ResponseError as e:
                    return await self._redirected(e, args, None)
            deadline = asyncio.get_running_loop().time() + timeout_s
            try:
                return await node._send(args, deadline, lazy)
            except ResponseError as e:
                return await self._redirected(e, args, deadline)
        deadline = None if timeout_s is None else asyncio.get_running_loop().time() + timeout_s
        if deadline is None:
            node = await self._owner(slot)
        else:
            async with asyncio.timeout(timeout_s):
                node = await self._owner(slot)
        try:
            return await node.command(*args, timeout_s=_left(deadline), lazy=lazy)
        except ResponseError as e:
            return await self._redirected(e, args, deadline)

    async def _redirected(self, err: ResponseError, args: tuple[Any, ...], deadline: float | None) -> Any:
        """Follow MOVED/ASK replies (up to MAX_REDIRECTS); any other error is the caller's."""
        for _ in range(MAX_REDIRECTS):
            msg = str(err)
            if msg.startswith("MOVED "):
                moved, addr = _addr(msg)
                node, asking = self.node(addr), False
                self._slots[moved] = node
                self._refresh_soon()
            elif msg.startswith("ASK "):
                node, asking = self.node(_addr(msg)[1]), True
            else:
                raise err
            self.redirects += 1
            try:
                if asking:
                    return await _asking(node, args, _left(deadline))
                return await node.command(*args, timeout_s=_left(deadline))
            except ResponseError as e:
                err = e
        raise ResponseError(f"store cluster: {_name(args)} redirected more than {MAX_REDIRECTS} times")

    async def commands(self, cmds: Sequence[tuple[Any, ...]], lazy: bool = False) -> list[Any]:
        """Each command to its own node; commands to one node still leave in one write."""
        return await asyncio.gather(*(self.command(*cmd, lazy=lazy) for cmd in cmds))

    async def load_script(self, script: Any, timeout_s: float | None = None) -> None:
        """Every primary gets the script: EVALSHA may land on any of them."""
        if not any(self._slots):
            await self._refresh()
        primaries = {id(n): n for n in self._slots if n is not None}.values()
        await asyncio.gather(*(ScriptCalls.load_script(n, script, timeout_s) for n in primaries))

    def send_now(self, *args: Any, timeout_s: float) -> asyncio.Future[Any] | None:
        """Sent now to the slot's node when it is known and connected (else None: use
        :meth:`command`); a redirect reply is followed by the returned future."""
        slot = command_slot(args)
        node = self._slots[slot] if slot is not None else None
        first = None if node is None else node.send_now(*args, timeout_s=timeout_s)
        if first is None:
            return None
        deadline = asyncio.get_running_loop().time() + timeout_s
        fut = asyncio.ensure_future(self._after(first, args, deadline))
        fut.add_done_callback(_retrieved)
        return fut

    async def _after(self, first: asyncio.Future[Any], args: tuple[Any, ...], deadline: float) -> Any:
        try:
            return await first
        except ResponseError as e:
            return await self._redirected(e, args, deadline)

    async def aclose(self) -> None:
        if self._later is not None:
            self._later.cancel()
            self._later = None
        if self._mapping is not None:  # a background map read: not left pending past the close
            self._mapping.cancel()
            self._mapping = None
        for n in self._nodes.values():
            n._drop(RedisConnectionError("client closed"))
        await self.redis.aclose()


async def _asking(node: LeanStore, args: tuple[Any, ...], timeout_s: float | None) -> Any:
    """`ASKING` then the command on the same connection, in the same write (both are sent in this
    event-loop iteration; auto-pipelining keeps them together and in order)."""
    loop = asyncio.get_running_loop()
    deadline = _NEVER if timeout_s is None else loop.time() + timeout_s
    async with asyncio.timeout(timeout_s):
        await node._ready()
    asked = node._send(("ASKING",), deadline)
    asked.add_done_callback(_retrieved)
    return await node._send(args, deadline)


def _name(args: Sequence[Any]) -> str:
    a = args[0]
    return a.decode() if isinstance(a, bytes) else str(a)
