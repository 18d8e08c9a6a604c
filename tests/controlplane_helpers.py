"""Fixtures for the control-plane tests: a real Valkey and a live admin API on free loopback ports."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import pytest

from sidegate.admin import controlplane as cp
from sidegate.ports import free_port, wait_for_port
from sidegate.store.redispy import client
from sidegate.store.valkey import embedded_valkey_cmd

T = TypeVar("T")
ADMIN_TOKEN = "test-admin-token-0123456789abcdef"


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@pytest.fixture(scope="module")
def valkey_url() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(embedded_valkey_cmd(port), stdout=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", port, proc=proc)
        yield f"redis://127.0.0.1:{port}"
    finally:
        _stop(proc)


def run(url: str, fn: Callable[[cp.ControlPlane], Awaitable[T]]) -> T:
    """``fn`` on a ControlPlane over an emptied store at ``url`` (the tests share one server)."""

    async def main() -> T:
        redis = client(url, socket_timeout_s=2.0)
        try:
            await redis.flushdb()
            return await fn(cp.ControlPlane(redis))
        finally:
            await redis.aclose()

    return asyncio.run(main())


def gateway_request(key: str) -> dict[str, str]:
    """The headers of a chat completion presenting ``key``, as authz's decide() reads them."""
    return {":path": "/v1/chat/completions", "authorization": f"Bearer {key}"}


def cli_env(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDEGATE_")}
    return {**env, "SIDEGATE_REDIS_URL": url, **extra}


def run_cli(
    url: str, *args: str, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m sidegate.admin.cli ARGS` against the store at ``url``."""
    return subprocess.run(
        [sys.executable, "-m", "sidegate.admin.cli", *args],
        env=cli_env(url, **(env_extra or {})),
        capture_output=True,
        text=True,
        timeout=30,
    )


@dataclass
class Admin:
    base: str
    token: str
    log_path: str

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def log(self) -> str:
        with open(self.log_path) as f:
            return f.read()


@pytest.fixture(scope="module")
def admin(valkey_url: str) -> Iterator[Admin]:
    """The admin API started the way an operator would: `sidegate admin serve`."""
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="sidegate-admin-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "sidegate.admin.cli", "admin", "serve", "--port", str(port)],
        env=cli_env(valkey_url, SIDEGATE_ADMIN_TOKEN=ADMIN_TOKEN),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port("127.0.0.1", port, timeout_s=20, proc=proc)
        yield Admin(f"http://127.0.0.1:{port}", ADMIN_TOKEN, log.name)
    finally:
        _stop(proc)
        log.close()
        os.unlink(log.name)
