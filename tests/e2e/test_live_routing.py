"""Live routing through real Envoy (static bootstrap, both fronts): a routing version committed to
the store (sidegate/routingstore.py) reaches the Python services within a second, without a
restart: a guard policy, a price (the ledger's cost of the next request) and a cache policy."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from harness import Stack, front_stack
from redis.asyncio import Redis

from sidegate import routingstore
from sidegate.config.routing import routing_doc

EXTRA = {
    "services": {"xds": False},  # Envoy's routes stay the bootstrap's; the Python side follows the store
    "models": {"gpt-4o-mini": {"routes": [{"provider": "openai"}], "cache": {"exact": True}}},
    "quota": {"prices": {"gpt-4o-mini": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}},
}


@pytest.fixture(scope="module", params=["ext_proc", "http"])
def gw(
    request: pytest.FixtureRequest, tmp_path_factory: Any, fake_openai: Any, fake_anthropic: Any
) -> Iterator[Stack]:
    yield from front_stack(
        request.param, tmp_path_factory.mktemp("live"), fake_openai.url, fake_anthropic.url, EXTRA
    )


def _commit(stack: Stack, doc: dict[str, Any]) -> int:
    assert stack.sup is not None

    async def main() -> int:
        redis = Redis.from_url(stack.sup.redis_url)
        try:
            return await routingstore.commit(redis, doc, actor="e2e", source="api")
        finally:
            await redis.aclose()

    return asyncio.run(main())


def _ask(client: openai.OpenAI, text: str) -> int:
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": text}])
    except openai.APIStatusError as e:
        return e.status_code
    return 200


def test_guard_price_and_cache_changes_apply_live(gw: Stack, fake_openai: Any) -> None:
    assert gw.sup is not None
    client = openai.OpenAI(
        base_url=gw.base_url + "/v1", api_key=gw.keys["acme"].key, max_retries=0, timeout=20
    )
    doc = routing_doc(gw.sup.cfg)
    _commit(gw, doc)
    time.sleep(routingstore.POLL_S * 3)
    # the file's policies: the exact cache answers a repeat, an e-mail address goes through
    assert _ask(client, "repeat me") == 200 and _ask(client, "repeat me") == 200
    assert len(fake_openai.requests) == 1
    assert _ask(client, "mail a@b.example") == 200

    changed = copy.deepcopy(doc)
    changed["models"]["gpt-4o-mini"]["guard"] = {"entities": {"EMAIL": "block"}}
    changed["models"]["gpt-4o-mini"]["cache"] = {"exact": False}
    changed["prices"]["gpt-4o-mini"] = {"input_per_mtok": 100.0, "output_per_mtok": 200.0}
    _commit(gw, changed)
    committed = time.monotonic()
    applied = None
    while time.monotonic() - committed < 3.0:
        if _ask(client, "mail a@b.example") == 400:
            applied = time.monotonic() - committed
            break
        time.sleep(0.02)
    assert applied is not None and applied <= 1.0, applied

    fake_openai.reset()
    assert _ask(client, "repeat me") == 200 and _ask(client, "repeat me") == 200
    assert len(fake_openai.requests) == 2  # the cache policy is off now: both reach the provider

    def repriced(r: Any) -> bool:
        return (
            r.model == "gpt-4o-mini"
            and r.status == 200
            and r.input_tokens > 0
            and r.cost_usd == pytest.approx((r.input_tokens * 100.0 + r.output_tokens * 200.0) / 1e6)
        )

    rec = gw.wait_ledger(repriced, timeout_s=10.0)
    assert rec.cost_usd > 0
