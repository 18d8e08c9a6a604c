"""A throwaway valkey-server and a one-shot redis client against it, shared by the tests of the
ledger's stream, its archive and its shipper (each starts one server per module)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from redis.asyncio import Redis

from sidegate.ports import free_port, wait_for_port
from sidegate.store.redispy import client
from sidegate.store.valkey import valkey_binary

T = TypeVar("T")


@contextlib.contextmanager
def valkey() -> Iterator[str]:
    """A valkey-server on a free loopback port, no persistence: yields its URL."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="sidegate-test-valkey-") as d:
        cmd = [valkey_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", d]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        try:
            wait_for_port("127.0.0.1", port, 10.0, proc)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def run(url: str, fn: Callable[[Redis], Awaitable[T]], socket_timeout_s: float = 5.0) -> T:
    """`fn` on a fresh client against an emptied database (FLUSHDB: every test starts clean)."""

    async def main() -> T:
        redis = client(url, socket_timeout_s=socket_timeout_s)
        try:
            await redis.flushdb()
            return await fn(redis)
        finally:
            await redis.aclose()

    return asyncio.run(main())
