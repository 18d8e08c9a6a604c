"""The store as a real 3-node Redis Cluster (`store.url: redis+cluster://...`) under a whole stack
through real Envoy: a request is admitted by the quota and filled into the exact cache, the same
request is then a cache hit, the quota's usage and the ledger's record are in the cluster, and a
burst admits exactly what fits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import openai
import pytest
from cluster_helpers import StoreCluster, running_cluster
from harness import Stack
from quota_helpers import MAX_TOKENS, PER_REQUEST, PROMPT, PROMPT_BODY, burst

from sidegate.features.ledger.reading import iter_records
from sidegate.features.quota import QuotaStore
from sidegate.store import RedisPyStore, client

pytestmark = pytest.mark.e2e
N_FIT = 5

STACK_EXTRA = {
    "services": {"front": "http", "auth": "inline"},
    "defaults": {"guard": None},
    "models": {
        "gpt-4o-mini": {"routes": [{"provider": "openai"}], "cache": {"exact": True, "semantic": False}}
    },
    "tenants": {
        "acme": {"quota": {"limits": {"tpm": 1_000_000}}},
        "globex": {"quota": {"limits": {"tpm": N_FIT * PER_REQUEST + PER_REQUEST - 1}}},
    },
}


@pytest.fixture(scope="module")
def store_cluster() -> Iterator[StoreCluster]:
    with running_cluster() as c:
        yield c


@pytest.fixture(scope="module")
def stack(tmp_path_factory, fake_openai, fake_anthropic, store_cluster: StoreCluster) -> Iterator[Stack]:
    extra = {**STACK_EXTRA, "store": {"url": store_cluster.url}}
    s = Stack(tmp_path_factory.mktemp("stack"), fake_openai.url, fake_anthropic.url, extra=extra)
    s.start()
    yield s
    s.stop()


def _ask(stack: Stack, key: str, text: str):
    c = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=stack.keys[key].key, max_retries=0, timeout=20)
    return c.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": text}],
        max_tokens=PROMPT_BODY["max_tokens"],
    )


def _in_cluster(url: str, fn):
    async def go():
        r = client(url)
        try:
            return await fn(r)
        finally:
            await r.aclose()

    return asyncio.run(go())


def test_quota_and_exact_cache_on_a_store_cluster(
    stack: Stack, store_cluster: StoreCluster, fake_openai
) -> None:
    assert stack.sup is not None and stack.sup.redis_url == store_cluster.url  # no embedded store
    q = "What is the capital of France?"
    first = _ask(stack, "acme", q)
    assert first.status_code == 200 and first.headers.get("x-sidegate-cache") in (None, "miss")
    deadline = time.monotonic() + 10
    while True:  # the fill is asynchronous
        again = _ask(stack, "acme", q)
        if again.headers.get("x-sidegate-cache") == "hit-exact":
            break
        assert time.monotonic() < deadline, "the exact cache was never filled on the cluster"
        time.sleep(0.2)
    assert again.parse().choices[0].message.content == first.parse().choices[0].message.content
    n = len(fake_openai.requests)
    assert _ask(stack, "acme", q).headers["x-sidegate-cache"] == "hit-exact"
    assert len(fake_openai.requests) == n  # the hit never reached the provider

    async def usage(r):
        return (await QuotaStore(RedisPyStore(r)).usage("acme"))["scopes"]["tenant:acme"]

    deadline = time.monotonic() + 5
    while _in_cluster(store_cluster.url, usage)["requests"] < 1:  # settled from the access log, batched
        assert time.monotonic() < deadline, "no quota usage in the cluster"
        time.sleep(0.1)

    async def ledger(r):
        return [rec async for _, rec in iter_records(r)]

    deadline = time.monotonic() + 10
    while not any(rec.tenant == "acme" for rec in _in_cluster(store_cluster.url, ledger)):
        assert time.monotonic() < deadline, "no ledger record in the cluster"
        time.sleep(0.2)


def test_a_burst_admits_exactly_what_fits_on_a_store_cluster(stack: Stack, fake_openai) -> None:
    """60 concurrent requests for a tenant with room for N_FIT: exactly N_FIT reach the provider."""
    # The provider reports exactly what was reserved, so settling never frees room mid-test.
    fake_openai.set_default(
        {"usage": {"prompt_tokens": PROMPT, "completion_tokens": MAX_TOKENS}, "delay_s": 0.3}
    )
    try:
        codes = burst(stack.base_url, stack.keys["globex"].key, 60, 60)
    finally:
        fake_openai.set_default(None)
    assert codes.count(200) == N_FIT and codes.count(429) == 60 - N_FIT, {
        c: codes.count(c) for c in set(codes)
    }
    assert len(fake_openai.requests) == N_FIT
