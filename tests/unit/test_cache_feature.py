"""The cache feature's pending fills are keyed by keys the gateway makes up, not the request id."""

from __future__ import annotations

import asyncio
from typing import Any

from sidegate import config
from sidegate.core.context import RequestContext
from sidegate.errors import Api
from sidegate.features.cache import CacheRequest
from sidegate.features.cache.feature import CacheFeature, PendingFills


class Misses:
    """Stands in for ResponseCache: every lookup misses; fills are recorded."""

    def __init__(self) -> None:
        self.fills: list[tuple[CacheRequest, bytes]] = []

    async def lookup(self, req: CacheRequest, policy: Any, sent: Any = None) -> None:
        return None

    def fill_soon(self, req: CacheRequest, response: bytes, policy: Any) -> None:
        self.fills.append((req, response))


def test_two_requests_with_one_client_request_id_fill_their_own_entries():
    cfg = config.parse({
        "providers": {"openai": {"api": "openai", "base_url": "http://127.0.0.1:9"}},
        "models": {"gpt-4o-mini": {"routes": [{"provider": "openai"}], "cache": {"exact": True}}},
    })  # fmt: skip
    cache, pending = Misses(), PendingFills()
    stage = filler = CacheFeature(cfg, cache, pending)  # type: ignore[arg-type]

    def miss(question: str) -> RequestContext:
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": question}]}
        ctx = RequestContext(path="/v1/chat/completions", method="POST", headers={}, api=Api.OPENAI,
                             request_id="client-chosen", tenant="acme", model="gpt-4o-mini", body=body)  # fmt: skip
        assert asyncio.run(stage.on_request(ctx)) is None
        return ctx

    a, b = miss("alpha?"), miss("bravo?")
    assert a.meta["cache_fill"] != b.meta["cache_fill"]
    filler.fill({**a.upstream_meta(), **a.meta}, None, b'{"answer":"alpha"}', streamed=False)
    filler.fill({**b.upstream_meta(), **b.meta}, None, b'{"answer":"bravo"}', streamed=False)
    (ra, body_a), (rb, body_b) = cache.fills
    expected_a = CacheRequest.from_body(Api.OPENAI, "acme", "gpt-4o-mini", a.body).exact_key
    expected_b = CacheRequest.from_body(Api.OPENAI, "acme", "gpt-4o-mini", b.body).exact_key
    assert (ra.exact_key, body_a) == (expected_a, b'{"answer":"alpha"}')
    assert (rb.exact_key, body_b) == (expected_b, b'{"answer":"bravo"}')


def test_the_key_index_keeps_entries_as_long_as_any_fill_lives():
    """A semantic match is read by its exact key: the index must keep keys as long as the longest
    TTL of any cache policy, not only of the exact ones (else it would call live entries missing)."""
    from sidegate.features.cache.feature import known_keys as _known_keys
    from sidegate.store import LeanStore, RedisPyStore, client

    cfg = config.parse({
        "providers": {"openai": {"api": "openai", "base_url": "http://127.0.0.1:9"}},
        "defaults": {"cache": {"exact": True, "ttl_s": 3600}},
        "models": {"gpt-4o-mini": {"routes": [{"provider": "openai"}], "cache": {"semantic": True, "ttl_s": 86400}}},
    })  # fmt: skip
    policies = [cfg.defaults.cache, *(m.cache for m in cfg.models.values() if m.cache is not None)]
    known = _known_keys(cfg, policies, LeanStore(client("redis://127.0.0.1:9"), "127.0.0.1", 9))
    assert known is not None and known.keep_s == 86400
    assert _known_keys(cfg.model_copy(update={"store": cfg.store.model_copy(update={"cache_index": False})}),
                       policies, LeanStore(client("redis://127.0.0.1:9"), "127.0.0.1", 9)) is None  # fmt: skip
    assert _known_keys(cfg, policies, RedisPyStore(client("rediss://127.0.0.1:9"))) is None  # no tracked connection


def test_a_failing_shutdown_step_does_not_skip_the_cache_drain(caplog):
    """Each shutdown step runs on its own: a semantic index that fails to close still leaves the
    pending fills drained and the key index closed."""
    import asyncio
    from types import SimpleNamespace

    from sidegate.features.cache.feature import CacheFeature

    done: list[str] = []

    def broken_close() -> None:
        raise RuntimeError("vector store gone")

    async def drain() -> None:
        done.append("drain")

    async def known_close() -> None:
        done.append("known")

    cache = SimpleNamespace(semantic=SimpleNamespace(close=broken_close), known=SimpleNamespace(close=known_close), drain=drain)
    feature = CacheFeature(None, cache)  # type: ignore[arg-type]
    asyncio.run(feature.close())
    assert done == ["drain", "known"]
    assert "shutdown step failed" in caplog.text
