"""What the gateway asks of its store client (see the package docstring for who uses what)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from redis.asyncio import Redis

from sidegate.store.script import LuaScript


class Store(Protocol):
    """The process's one store client: per-request commands within a time limit, plus the redis-py
    client on the same store for everything richer."""

    redis: Redis
    """redis-py on the same store and database: SCAN, pub/sub, pipelines, WATCH (the tenants
    watcher, the key cache, the cache index's loader). Not for the request path."""

    async def command(self, *args: Any, timeout_s: float | None = None, lazy: bool = False) -> Any:
        """One command, its reply (bytes, int, list...: redis-py turns some into Python types, e.g.
        SET's into True, so callers read only replies both clients agree on: GET, EVALSHA, XADD,
        SMEMBERS as an iterable of bytes). With `timeout_s`, raises TimeoutError when
        the reply is not there in time (connecting included). `lazy`: a write no request waits for
        (a cache fill, a ledger record) may wait a moment for company (LAZY_S in lean.py)."""
        ...

    async def commands(self, cmds: Sequence[tuple[Any, ...]], lazy: bool = False) -> list[Any]:
        """Several commands in one round trip (not a transaction); raises the first error."""
        ...

    async def run_script(
        self, script: LuaScript, keys: Sequence[str], args: Sequence[Any], timeout_s: float | None = None
    ) -> Any:
        """EVALSHA, loading the script again on NOSCRIPT; the whole call within `timeout_s`."""
        ...

    async def load_script(self, script: LuaScript, timeout_s: float | None = None) -> None: ...

    def send_now(self, *args: Any, timeout_s: float) -> asyncio.Future[Any] | None:
        """One command sent without waiting, its reply's future (which may be left unawaited: a
        failure is then dropped); None when this client cannot (use :meth:`command`)."""
        ...

    @property
    def tracked(self) -> TrackedConnection | None:
        """This client's connection for Redis client-side tracking, or None when it has no single
        connection to track on (redis-py's pool)."""
        ...

    async def aclose(self) -> None: ...


class TrackedConnection(Protocol):
    """One long-lived store connection whose `CLIENT TRACKING` setting survives reconnects: what
    the cache's key index (features/cache/known.py) builds on."""

    host: str
    port: int
    password: str | None
    tracking: tuple[Any, ...] | None
    """The `CLIENT TRACKING ON ...` command every new connection sends after its hello."""
    on_connection: Callable[[bool], None] | None
    """Told True when a new connection is ready, False when one is lost or closed."""
    connections: int
    """Connections made so far (a new one means anything tied to the last one is gone)."""

    @property
    def connected(self) -> bool: ...

    async def track(self, cmd: tuple[Any, ...]) -> None: ...

    async def command(self, *args: Any, timeout_s: float | None = None, lazy: bool = False) -> Any: ...
