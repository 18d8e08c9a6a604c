"""Quota leases (quota.lease) through Envoy with two extproc processes sharing one Valkey: a busy
tenant's requests are admitted from leases and its usage comes out exact once the leases end; a
tenant near its limit is still admitted exactly up to it."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from fault_helpers import tenant_usage

from sidegate.errors import Api
from sidegate.quota import TokenCounter, TokenizerConfig

pytestmark = pytest.mark.e2e
MAX_TOKENS = 100
N_FIT = 20
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Count to three."}], "max_tokens": MAX_TOKENS}
PROMPT = TokenCounter(TokenizerConfig()).count(Api.OPENAI, BODY)
PER_REQUEST = PROMPT + MAX_TOKENS

STACK_EXTRA = {  # two extproc processes sharing one Valkey; short leases
    "services": {"extproc_workers": 2},
    "store": {"socket_timeout_s": 5.0},
    "quota": {"op_timeout_s": 5.0, "lease": {"enabled": True, "ttl_ms": 300, "flush_ms": 20}},
    "defaults": {"guard": None},
    "tenants": {
        "acme": {"quota": {"limits": {"tpm": N_FIT * PER_REQUEST + PER_REQUEST - 1, "rpm": 100_000}}},
        "globex": {"quota": {"limits": {"rpm": 100_000, "tpm": 10**9}}},
    },
}


def _burst(stack, tenant: str, n: int, concurrency: int) -> list[int]:
    headers = {"authorization": f"Bearer {stack.keys[tenant].key}"}

    async def run() -> list[int]:
        sem = asyncio.Semaphore(concurrency)
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=stack.base_url, limits=limits, timeout=60) as client:
            async def one() -> int:
                async with sem:
                    r = await client.post("/v1/chat/completions", json=BODY, headers=headers)
                    return r.status_code

            return await asyncio.gather(*(one() for _ in range(n)))

    return asyncio.run(run())


def _lease_admits(stack) -> float:
    text = httpx.get(f"http://127.0.0.1:{stack.sup.cfg.services.metrics_port}/metrics").text
    return sum(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith("sidegate_quota_lease_admits_total"))


def test_a_busy_tenant_is_admitted_from_leases_and_counted_exactly(stack, fake_openai):
    fake_openai.set_default({"usage": {"prompt_tokens": PROMPT, "completion_tokens": 7}})
    try:
        codes = _burst(stack, "globex", 300, 16)
    finally:
        fake_openai.set_default(None)
    assert codes.count(200) == 300, {c: codes.count(c) for c in set(codes)}
    # Once the leases end (300 ms) and the true-ups are written, the store holds what was used:
    # 300 requests, each the provider's usage, nothing of the leases' unused capacity.
    want = {"requests": 300, "tokens": 300 * (PROMPT + 7)}
    deadline = time.monotonic() + 10
    got: dict = {}
    while time.monotonic() < deadline:
        u = tenant_usage(stack, "globex")
        got = {"requests": u["requests"], "tokens": u["tokens"]}
        if got == want:
            break
        time.sleep(0.1)
    assert got == want
    assert _lease_admits(stack) > 100  # most requests skipped the store's reservation


def test_a_tenant_near_its_limit_is_admitted_exactly_up_to_it(stack, fake_openai):
    """No lease is worth taking when the limit has room for few requests: each reserves in the
    store, and a concurrent burst gets exactly what fits, as without leases."""
    fake_openai.set_default({"usage": {"prompt_tokens": PROMPT, "completion_tokens": MAX_TOKENS}, "delay_s": 0.3})
    try:
        codes = _burst(stack, "acme", 120, 60)
    finally:
        fake_openai.set_default(None)
    assert codes.count(200) == N_FIT, {c: codes.count(c) for c in set(codes)}
    assert codes.count(429) == 120 - N_FIT
