"""The lean store client for the request path (quota reserve/settle, cache lookups and fills, ledger
appends).

redis-py's asyncio client costs ~100 µs of Python per command (connection pool, retry wrapper,
command packing, response callbacks); the quota scripts run two commands per request, so it was
the largest item of the gateway's profile. This client keeps one connection per process, writes
every command issued during one event-loop iteration in a single write (auto-pipelining), and
parses replies with hiredis. It raises redis-py's exception classes, so callers handle errors the
same way whichever client serves them. A command may carry a time limit (`timeout_s`): one
watchdog timer for the connection fails the commands past their limit with TimeoutError (as
`asyncio.timeout` would, without a timer per command); their replies, when they come, are read and
dropped. Plain `redis://` URLs only (host, port, ACL user and password, db); anything else gets redis-py's
client behind the same protocol (redispy.py).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from sidegate.store.script import ScriptCalls


def _encode(args: tuple[Any, ...]) -> bytes:
    """A command in RESP (hiredis packs it in C: ~2.5x faster for the quota scripts' 30 arguments)."""
    try:
        return hiredis.pack_command(args)
    except TypeError:  # e.g. a bool, which hiredis refuses
        return _encode_py(args)


def _encode_py(args: tuple[Any, ...]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, bytes):
            b = a
        elif isinstance(a, str):
            b = a.encode()
        elif isinstance(a, (int, float)):
            b = repr(a).encode()
        else:
            raise TypeError(f"cannot send {type(a).__name__} to the store")
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


_NEVER = float("inf")
LAZY_S = 0.002
"""Longest a lazy write waits for a command that is waited on, to leave with it."""


def _retrieved(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


class _Protocol(asyncio.Protocol):
    def __init__(self, client: LeanStore):
        self.client = client
        self.reader = hiredis.Reader(replyError=ResponseError)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.client._proto is not self:  # a connection the client already dropped
            return
        self.reader.feed(data)
        pending, deadlines = self.client._pending, self.client._deadlines
        while True:
            reply = self.reader.gets()
            if reply is False:
                return
            if not pending:  # a reply nobody waits for: the connection is out of step
                self.client._drop(RedisConnectionError("unexpected reply from the store"))
                return
            fut = pending.popleft()
            deadlines.popleft()
            if fut.done():  # the caller timed out / was cancelled: the reply is consumed anyway
                continue
            if isinstance(reply, ResponseError):
                msg = str(reply)
                fut.set_exception(NoScriptError(msg) if msg.startswith("NOSCRIPT") else reply)
            else:
                fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client._proto is self:  # not one the client already dropped (maybe reconnected since)
            self.client._drop(RedisConnectionError("connection to the store lost"))


class LeanStore(ScriptCalls):
    """A :class:`sidegate.store.protocol.Store`: `await store.command("GET", "k", timeout_s=0.05)`;
    also its own :class:`sidegate.store.protocol.TrackedConnection` (one connection per process)."""

    def __init__(self, redis: Redis, host: str, port: int, password: str | None = None, db: int = 0,
                 connect_timeout_s: float = 1.0, username: str | None = None):  # fmt: skip
        self.redis = redis
        """redis-py on the same store, for what this client does not do (SCAN, pub/sub, WATCH)."""
        self.host, self.port, self.password, self.db = host, port, password, db
        self.username = username
        """An ACL user (`redis://user:password@...`); None: the server's default user."""
        self.connect_timeout_s = connect_timeout_s
        self.stuck_after_s = max(connect_timeout_s, 1.0)
        """How long past its limit an unanswered command may stay before the connection is dropped."""
        self._pending: deque[asyncio.Future[Any]] = deque()
        self._deadlines: deque[float] = deque()  # loop time by which each pending reply is due
        self._watchdog: asyncio.TimerHandle | None = None
        self._watch_at = _NEVER
        self._out: list[bytes] = []
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Future[None] | None = None
        self._flush_scheduled = False
        self._lazy_flush: asyncio.TimerHandle | None = None
        self.tracking: tuple[Any, ...] | None = None
        """A `CLIENT TRACKING ON ...` command every new connection sends after its hello (see
        :meth:`track`)."""
        self.on_connection: Callable[[bool], None] | None = None
        """Told True when a new connection is ready, False when one is lost or closed."""
        self.connections = 0
        """Connections made so far (a new one means anything tied to the last one is gone)."""

    @classmethod
    def from_url(cls, url: str, redis: Redis, connect_timeout_s: float = 1.0) -> LeanStore | None:
        """A client for a plain `redis://host:port/db` URL (password allowed), else None; `redis`:
        redis-py's client for the same URL."""
        u = urlsplit(url)
        db = u.path.strip("/") or "0"
        if u.scheme != "redis" or not u.hostname or u.query or not db.isdigit():
            return None
        return cls(redis, u.hostname, u.port or 6379, unquote(u.password) if u.password else None, int(db),
                   connect_timeout_s, unquote(u.username) if u.username else None)  # fmt: skip

    # -- connection -------------------------------------------------------------------------
    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout_s):
            _, proto = await loop.create_connection(lambda: _Protocol(self), self.host, self.port)
        self._proto = proto
        self.connections += 1
        hello: list[tuple[Any, ...]] = []
        if self.password:  # with the ACL user when the URL names one (AUTH <password> is the default user)
            hello.append(("AUTH", self.username, self.password) if self.username else ("AUTH", self.password))
        if self.db:
            hello.append(("SELECT", self.db))
        try:
            for cmd in hello:
                await self._send(cmd)
        except BaseException:
            # A refused AUTH must not leave the connection in use as the server's default user.
            self._drop(RedisConnectionError("the store refused this client's AUTH or SELECT"))
            raise
        if self.tracking is not None:  # its failure shows to the tracker (no report), not to callers
            self._send(self.tracking).add_done_callback(_retrieved)
        if self.on_connection is not None:
            self.on_connection(True)

    @property
    def connected(self) -> bool:
        return self._proto is not None

    @property
    def tracked(self) -> LeanStore:
        return self

    async def track(self, cmd: tuple[Any, ...]) -> None:
        """Turn key tracking on for this client's connection, now and on every new one (raises the
        store's ResponseError when it refuses)."""
        await self._ready()
        self.tracking = cmd
        await self._send(("CLIENT", "TRACKING", "OFF"))
        await self._send(cmd)

    def _drop(self, exc: Exception) -> None:
        proto, self._proto = self._proto, None
        if proto is not None and proto.transport is not None:
            proto.transport.close()
        pending, self._pending, self._deadlines = self._pending, deque(), deque()
        self._out.clear()
        if self._lazy_flush is not None:
            self._lazy_flush.cancel()
            self._lazy_flush = None
        if self._watchdog is not None:  # nothing left to watch (and a new connection may be on another loop)
            self._watchdog.cancel()
        self._watchdog, self._watch_at = None, _NEVER
        for fut in pending:
            if not fut.done():
                fut.set_exception(exc)
        if proto is not None and self.on_connection is not None:
            self.on_connection(False)

    async def _ready(self) -> None:
        if self._proto is not None:
            return
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        connecting = self._connecting
        try:
            await asyncio.shield(connecting)
        except OSError as e:
            raise RedisConnectionError(f"cannot reach the store ({type(e).__name__})") from None
        finally:
            if self._connecting is connecting and connecting.done():
                self._connecting = None

    # -- commands ---------------------------------------------------------------------------
    def _send(self, args: tuple[Any, ...], deadline: float = _NEVER, lazy: bool = False) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending.append(fut)
        self._deadlines.append(deadline)
        self._out.append(_encode(args))
        if lazy:
            # Nobody waits on it: it leaves with the next command that is waited on (in the same
            # write, so in order), or after LAZY_S. Under load that saves a write and a read
            # (system calls on both sides: ~15 % of extproc's CPU) per fill and ledger record.
            if not self._flush_scheduled and self._lazy_flush is None:
                self._lazy_flush = loop.call_later(LAZY_S, self._flush)
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        if deadline < self._watch_at:
            self._watch(loop, deadline)
        return fut

    def _watch(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watch_at = when
        self._watchdog = loop.call_at(when, self._expire)

    def _expire(self) -> None:
        """The watchdog: fail the commands past their time; wake again at the next limit. Replies
        come in order, so a command still unanswered `stuck_after_s` past its limit means the
        connection is stuck (a frozen or half-open store): it is dropped, and the next command
        connects again (as redis-py drops a connection on a socket timeout)."""
        self._watchdog, self._watch_at = None, _NEVER
        loop = asyncio.get_running_loop()
        now, nxt = loop.time(), _NEVER
        for fut, deadline in zip(self._pending, self._deadlines, strict=True):
            if deadline + self.stuck_after_s <= now:
                self._drop(RedisConnectionError("the store stopped answering"))
                return
            if deadline <= now:
                if not fut.done():
                    fut.set_exception(TimeoutError())
                nxt = min(nxt, deadline + self.stuck_after_s)
            elif deadline < nxt:
                nxt = deadline
        if nxt < _NEVER:
            self._watch(loop, nxt)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._lazy_flush is not None:
            self._lazy_flush.cancel()
            self._lazy_flush = None
        if not self._out:
            return
        data = b"".join(self._out)
        self._out.clear()
        proto = self._proto
        if proto is None or proto.transport is None or proto.transport.is_closing():
            self._drop(RedisConnectionError("connection to the store lost"))
            return
        proto.transport.write(data)

    async def command(self, *args: Any, timeout_s: float | None = None, lazy: bool = False) -> Any:
        """One command, raw reply (bytes, int, list...). With `timeout_s`, raises TimeoutError when
        the reply is not there in time (connecting included). `lazy`: a write no request waits for
        (a cache fill, a ledger record) may wait up to LAZY_S for company."""
        if timeout_s is None:
            await self._ready()
            return await self._send(args, _NEVER, lazy)
        deadline = asyncio.get_running_loop().time() + timeout_s
        if self._proto is None:
            async with asyncio.timeout(timeout_s):
                await self._ready()
        return await self._send(args, deadline, lazy)

    async def commands(self, cmds: Sequence[tuple[Any, ...]], lazy: bool = False) -> list[Any]:
        """Several commands; auto-pipelining sends them in one write."""
        return await asyncio.gather(*(self.command(*cmd, lazy=lazy) for cmd in cmds))

    def send_now(self, *args: Any, timeout_s: float) -> asyncio.Future[Any] | None:
        """One command sent without waiting (None when not connected: use :meth:`command`). The
        reply's future may be left unawaited: a failure is then dropped, not logged."""
        if self._proto is None:
            return None
        fut = self._send(args, asyncio.get_running_loop().time() + timeout_s)
        fut.add_done_callback(_retrieved)
        return fut

    async def aclose(self) -> None:
        self._drop(RedisConnectionError("client closed"))
        await self.redis.aclose()
