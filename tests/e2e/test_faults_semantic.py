"""Fault matrix, semantic cache rows: the Qdrant server refuses connections or never answers.

The cache is an optimisation: with its vector store down, Sidegate must start and answer uncached
within a bounded delay (the lookup bound is `semantic_timeout_ms`)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from fault_helpers import body_for, post
from harness import Stack

from sidegate.ports import free_port

pytestmark = pytest.mark.e2e
CACHED_MODEL = {"routes": [{"provider": "openai"}], "cache": {"exact": True, "semantic": True, "semantic_timeout_ms": 100}}


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A URL whose server accepts TCP connections and never answers (a hung Qdrant)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    try:
        yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    finally:
        srv.close()


def _start_and_ask(tmp_path, fake_openai, fake_anthropic, qdrant_url: str) -> None:
    extra = {"semantic": {"qdrant_url": qdrant_url, "fill_timeout_s": 1.0}, "models": {"gpt-4o-mini": CACHED_MODEL}, "defaults": {"guard": None}}
    s = Stack(tmp_path, fake_openai.url, fake_anthropic.url, extra=extra)
    try:
        s.start()
        for i in range(3):
            t = time.monotonic()
            r = post(s, "openai", body_for("openai", "gpt-4o-mini", f"question {i}"), timeout=5)
            assert r.status_code == 200, r.text[:200]
            assert not r.headers.get("x-sidegate-cache", "").startswith("hit")
            assert time.monotonic() - t < 1.0
    finally:
        s.stop()


@pytest.mark.alone  # bounds a duration
def test_qdrant_refusing_connections(tmp_path, fake_openai, fake_anthropic):
    _start_and_ask(tmp_path, fake_openai, fake_anthropic, f"http://127.0.0.1:{free_port()}")


@pytest.mark.alone  # bounds a duration
def test_qdrant_never_answering(tmp_path, fake_openai, fake_anthropic, black_hole):
    _start_and_ask(tmp_path, fake_openai, fake_anthropic, black_hole)
