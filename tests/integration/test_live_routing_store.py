"""Live routing against a real store (valkey): a version committed with sidegate/routingstore.py
reaches the extproc app's gateway, prices and policies within a second, through the follower's
poll (sidegate/core/live.py), with no restart."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from sidegate import config, routingstore
from sidegate.app import App, default_features
from sidegate.config.routing import routing_doc
from sidegate.core.completion import Completion
from sidegate.core.context import Reply, RequestContext
from sidegate.core.intake import open_request
from sidegate.core.live import Follower
from sidegate.core.pipeline import Forward
from sidegate.features.ledger.feature import LedgerFeature
from sidegate.store.redispy import client
from sidegate.translate.base import Usage
from tests.valkey_helpers import valkey

CFG = config.parse({
    "services": {"auth": "ext_authz"},  # the tenant comes with the request, as from ext_authz
    "providers": {
        "oai": {"api": "openai", "base_url": "http://127.0.0.1:9", "api_key_env": "K1"},
        "ant": {"api": "anthropic", "base_url": "http://127.0.0.1:11", "api_key_env": "K2"},
    },
    "models": {"gpt": {"routes": [{"provider": "oai"}]}},
    "quota": {"prices": {"gpt": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}},
}, env={"K1": "sk-1", "K2": "sk-2"})  # fmt: skip


class Ledger:
    """The ledger's completion hook with the cost it is given; records the costs."""

    def __init__(self) -> None:
        self.costs: list[float] = []

    def completion_hook(self, cost: Any) -> Any:
        return lambda c: self.costs.append(cost(c))

    def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with valkey() as u:
        yield u


def _request(model: str, text: str = "hi") -> RequestContext:
    ctx = open_request("/v1/chat/completions", "POST", {}, tenant="t", key_id="k", allowed_models=("*",))
    assert isinstance(ctx, RequestContext)
    ctx.raw_body = orjson.dumps({"model": model, "messages": [{"role": "user", "content": text}]})
    return ctx


async def _until(check: Any, committed: float) -> float:
    """Seconds from the commit until `check()` holds (polled up to 3 s)."""
    deadline = committed + 3.0
    while time.monotonic() < deadline:
        if await check():
            return time.monotonic() - committed
        await asyncio.sleep(0.02)
    raise AssertionError("the change did not apply within 3 s")


def test_model_price_and_guard_changes_apply_within_a_second(url: str) -> None:
    async def main() -> None:
        redis = client(url)
        await redis.flushdb()
        ledger = Ledger()
        app = App(CFG, [*default_features(CFG), LedgerFeature(ledger, CFG)])  # type: ignore[arg-type]
        app.follower = Follower(redis, CFG, app.versions)
        doc = routing_doc(CFG)
        await routingstore.commit(redis, doc, actor="test", source="file")
        await app.start()
        try:
            assert app.versions.version == 1  # the store's version before the first request

            # a model added
            added = copy.deepcopy(doc)
            added["models"]["claude"] = {"routes": [{"provider": "ant"}]}
            await routingstore.commit(redis, added, actor="test", source="api")
            committed = time.monotonic()

            async def served() -> bool:
                out = await app.gateway.run(_request("claude"))
                return isinstance(out, Forward) and out.route == "claude"

            assert await _until(served, committed) <= 1.0

            # a price change: the next request's ledger cost
            priced = copy.deepcopy(added)
            priced["prices"]["gpt"] = {"input_per_mtok": 100.0, "output_per_mtok": 200.0}
            await routingstore.commit(redis, priced, actor="test", source="api")
            committed = time.monotonic()
            usage = Usage(input_tokens=1000, output_tokens=1000)

            async def repriced() -> bool:
                ledger.costs.clear()
                for hook in app.completion_hooks:
                    hook(Completion(meta={"model": "gpt", "tenant": "t"}, provider="oai", upstream_model="gpt",
                                    status=200, usage=usage, final=True, streamed=False))  # fmt: skip
                return ledger.costs[-1] == pytest.approx(0.3)

            assert await _until(repriced, committed) <= 1.0

            # a guard policy: e-mail addresses blocked for gpt
            guarded = copy.deepcopy(priced)
            guarded["models"]["gpt"]["guard"] = {"entities": {"EMAIL": "block"}}
            assert isinstance(await app.gateway.run(_request("gpt", "mail a@b.example")), Forward)
            await routingstore.commit(redis, guarded, actor="test", source="api")
            committed = time.monotonic()

            async def blocked() -> bool:
                out = await app.gateway.run(_request("gpt", "mail a@b.example"))
                return isinstance(out, Reply) and out.status == 400

            assert await _until(blocked, committed) <= 1.0

            # a refused (invalid) document leaves the running version untouched
            bad = copy.deepcopy(guarded)
            bad["models"]["gpt"]["routes"] = [{"provider": "nope"}]
            v = await routingstore.commit(redis, bad, actor="test", source="api")
            await asyncio.sleep(routingstore.POLL_S * 3)
            assert app.versions.version == v - 1
            assert isinstance(await app.gateway.run(_request("claude")), Forward)
        finally:
            await app.aclose()
            await redis.aclose()

    asyncio.run(main())
