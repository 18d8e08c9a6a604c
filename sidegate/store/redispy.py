"""redis-py behind the store protocol: for the URLs the lean client does not take (`rediss://`,
unix sockets, sentinel, query options), and the client every process uses for the richer API."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis

from sidegate.config.storeurl import is_cluster_url
from sidegate.store.script import ScriptCalls


def client(url: str, socket_timeout_s: float = 1.0, max_connections: int = 256) -> Redis:
    """One shared async client per process. A blocking pool: past `max_connections` concurrent
    commands a caller waits (bounded by the timeout) instead of failing at once. A
    `redis+cluster://` URL gets redis-py's cluster client (cluster.py)."""
    if is_cluster_url(url):
        from sidegate.store.cluster import cluster_client

        return cluster_client(url, socket_timeout_s, max_connections)
    pool = BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=socket_timeout_s, socket_timeout=socket_timeout_s,
        socket_connect_timeout=socket_timeout_s, health_check_interval=0,
    )  # fmt: skip
    return Redis(connection_pool=pool)


class RedisPyStore(ScriptCalls):
    """A :class:`sidegate.store.protocol.Store` over redis-py's pool: each command runs under
    `asyncio.timeout` (a timer per call, which the lean client avoids); nothing is lazy (every
    command is sent at once); no single connection to track keys on."""

    tracked = None

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def command(self, *args: Any, timeout_s: float | None = None, lazy: bool = False) -> Any:
        if timeout_s is None:
            return await self.redis.execute_command(*args)
        async with asyncio.timeout(timeout_s):
            return await self.redis.execute_command(*args)

    async def commands(self, cmds: Sequence[tuple[Any, ...]], lazy: bool = False) -> list[Any]:
        pipe = self.redis.pipeline(transaction=False)
        for cmd in cmds:
            pipe.execute_command(*cmd)
        return await pipe.execute()

    def send_now(self, *args: Any, timeout_s: float) -> asyncio.Future[Any] | None:
        return None

    async def aclose(self) -> None:
        await self.redis.aclose()
