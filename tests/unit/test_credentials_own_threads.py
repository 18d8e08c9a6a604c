"""A credential fetch that hangs (an unreachable metadata server, STS) must hold none of the event
loop's default executor: the request path runs there too (the quota's token count of a large body,
sidegate/features/quota/tokens.py). The cloud schemes fetch in threads of their own."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from pathlib import Path

import pytest

from sidegate.config import ProviderConfig
from sidegate.credentials.aws import SigV4
from sidegate.credentials.refreshing import RefreshingToken


class Hanging(RefreshingToken):
    def __init__(self, release: threading.Event) -> None:
        super().__init__("hanging", 0.0)
        self.release = release

    def fetch(self) -> tuple[str, float]:
        self.release.wait(10)
        raise TimeoutError("metadata server did not answer")


async def _default_executor_still_serves(start, close) -> None:
    loop = asyncio.get_running_loop()
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=1))
    starting = asyncio.ensure_future(start())
    try:
        await asyncio.sleep(0.2)  # the fetch is under way (and hangs)
        assert await asyncio.wait_for(asyncio.to_thread(lambda: 42), 2.0) == 42
    finally:
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await close()


def test_a_hanging_token_fetch_leaves_the_default_executor_free() -> None:
    release = threading.Event()
    token = Hanging(release)
    try:
        asyncio.run(_default_executor_still_serves(lambda: token.start(lambda: None), token.close))
    finally:
        release.set()


def test_a_hanging_aws_chain_read_leaves_the_default_executor_free(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    release = threading.Event()
    cred = SigV4(ProviderConfig(api="bedrock", base_url="https://bedrock-runtime.us-east-1.amazonaws.com"))

    def hang() -> None:
        release.wait(10)
        raise LookupError("no AWS credentials found")

    monkeypatch.setattr(cred, "_read", hang)
    try:
        asyncio.run(_default_executor_still_serves(lambda: cred.start(lambda: None), cred.close))
    finally:
        release.set()
