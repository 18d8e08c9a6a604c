"""Real Redis-protocol servers for the quota tests: the embedded Valkey and Debian's redis-server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from redis.asyncio import BlockingConnectionPool, Redis

from sidegate.config.storeurl import is_cluster_url
from sidegate.errors import Api
from sidegate.features.quota import Limits, QuotaStore, Scope, TokenCounter, TokenizerConfig
from sidegate.ports import free_port, wait_for_port
from sidegate.store import ClusterStore, RedisPyStore, Store
from sidegate.store.redispy import client as store_client
from sidegate.store.valkey import valkey_binary

REDIS_SERVER = "/usr/bin/redis-server"
SERVER_KINDS = ("valkey", "redis")

# The quota e2e tests' request, and what the gateway reserves for it (prompt + max output).
MAX_TOKENS = 100
PROMPT_BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Count to three."}], "max_tokens": MAX_TOKENS}
PROMPT = TokenCounter(TokenizerConfig()).count(Api.OPENAI, PROMPT_BODY)
PER_REQUEST = PROMPT + MAX_TOKENS


def burst(base_url: str, key: str, n: int, concurrency: int) -> list[int]:
    """`n` PROMPT_BODY requests through the gateway, `concurrency` at a time: their status codes."""
    headers = {"authorization": f"Bearer {key}"}

    async def run() -> list[int]:
        sem = asyncio.Semaphore(concurrency)
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as client:

            async def one() -> int:
                async with sem:
                    r = await client.post("/v1/chat/completions", json=PROMPT_BODY, headers=headers)
                    return r.status_code

            return await asyncio.gather(*(one() for _ in range(n)))

    return asyncio.run(run())


def server_binary(kind: str) -> str:
    """Path of the server binary, or skip the test when Debian's redis-server is not installed."""
    if kind == "valkey":
        return valkey_binary()
    path = REDIS_SERVER if Path(REDIS_SERVER).exists() else shutil.which("redis-server")
    if not path:
        if os.environ.get("CI"):  # scripts/test installs it: in CI a missing server is a failure
            pytest.fail("redis-server not installed: scripts/test should have installed it (apt-get)")
        pytest.skip("redis-server not installed (apt-get install -y redis-server)")
    return path


@dataclass
class Server:
    """One throwaway server on a free loopback port that can be stopped, frozen and restarted."""

    kind: str
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    _dir: tempfile.TemporaryDirectory[str] = field(
        default_factory=lambda: tempfile.TemporaryDirectory(prefix="sg-quota-")
    )

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        cmd = [
            server_binary(self.kind), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", self._dir.name, "--loglevel", "warning",
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port("127.0.0.1", self.port, timeout_s=10, proc=self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGCONT)
                self.proc.kill()
            self.proc.wait(timeout=5)
            self.proc = None

    def freeze(self) -> None:
        """SIGSTOP: the port stays open but nothing answers (a hung store)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """Same port, empty data (scripts included)."""
        self.stop()
        deadline = time.monotonic() + 5
        while True:
            try:
                self.start()
                return
            except (RuntimeError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()


@contextlib.contextmanager
def running_server(kind: str) -> Iterator[Server]:
    srv = Server(kind)
    try:
        srv.start()
        yield srv
    finally:
        srv.close()


def make_store(url: str, socket_timeout_s: float = 0.2, lean: bool = False, **kw: object) -> QuotaStore:
    """A QuotaStore on a fresh client (create it inside the event loop that will use it). On a
    `redis+cluster://` URL: the lean cluster client with `lean`, else redis-py's cluster client."""
    opts: dict[str, object] = {"window_s": 60.0, "buckets": 60, "op_timeout_s": 0.5}
    opts.update(kw)
    store: Store
    if is_cluster_url(url):
        # redis-py's cluster client has no waiting pool (past max_connections per node it raises
        # MaxConnectionsError): room for every call of the race at once.
        redis = store_client(url, socket_timeout_s, max_connections=1024)
        store = ClusterStore.from_url(url, redis, socket_timeout_s) if lean else RedisPyStore(redis)
    else:
        store = RedisPyStore(blocking_client(url, timeout_s=socket_timeout_s))
    return QuotaStore(store, **opts)  # type: ignore[arg-type]


def blocking_client(url: str, max_connections: int = 64, timeout_s: float = 0.2) -> Redis:
    """A client whose pool waits for a free connection instead of failing at max_connections
    (redis-py's default pool raises MaxConnectionsError past 100 concurrent commands)."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=5.0,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
    )
    return Redis(connection_pool=pool)


async def _fire(url: str, tenant: str, tpm: int, tokens: int, calls: int, lean: bool) -> dict[str, float]:
    # Generous timeouts: 600 coroutines on 2 shared cores wait on the event loop, not the store.
    store = make_store(url, socket_timeout_s=5.0, lean=lean, op_timeout_s=10.0)
    scopes = [Scope(f"tenant:{tenant}", Limits(tpm=tpm))]
    await store.load_scripts()
    print("ready", flush=True)
    start_at = float(await asyncio.to_thread(sys.stdin.readline))
    delay = start_at - time.time()
    if 0 < delay < 30:
        await asyncio.sleep(delay)
    t0 = time.time()
    decisions = await asyncio.gather(
        *(store.reserve(tenant, scopes, tokens, f"w{os.getpid()}-{i}") for i in range(calls))
    )
    t1 = time.time()
    await store.store.aclose()
    if any(d.degraded for d in decisions):
        raise SystemExit(f"store errors during the run: {store.counters}")
    return {"admitted": sum(d.admitted for d in decisions), "t0": t0, "t1": t1}


def worker_main(argv: list[str]) -> None:
    """``python quota_helpers.py worker URL TENANT TPM TOKENS CALLS [lean]``: prints ``ready``, reads
    the wall-clock start time from stdin, fires all calls at once at that time, prints a JSON result.
    ``lean``: the lean store client (a cluster URL's; redis-py's otherwise)."""
    url, tenant, tpm, tokens, calls, *client = argv
    logging.basicConfig(level=logging.WARNING)
    lean = client == ["lean"]
    print(json.dumps(asyncio.run(_fire(url, tenant, int(tpm), int(tokens), int(calls), lean))))


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "worker":
    worker_main(sys.argv[2:])
