"""Routing policies through a real Envoy on both fronts (docs/routing.md): cost picks the cheaper of
two healthy providers (and the other once the prices are swapped), latency moves traffic away from
a slowed provider within seconds (two extproc workers sharing their stats through the store), the
header and tenant overrides, and the decision in the access log."""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
import redis
from harness import FRONT_SERVICES, Stack, front_stack

from sidegate.features.route.latency import SYNC_S
from sidegate.wire import PROVIDER_OVERRIDE_HEADER

pytestmark = pytest.mark.e2e

PRICES = {
    "gpt-4o-mini": {"input_per_mtok": 5.0, "output_per_mtok": 15.0},
    "claude-3-5-haiku": {"input_per_mtok": 0.25, "output_per_mtok": 1.25},
}
EXTRA: dict[str, Any] = {
    "services": {"extproc_workers": 2},
    "providers": {"openai-b": {"api": "openai", "base_url": "FAKE_ANTHROPIC", "api_key_env": "E2E_OPENAI_KEY"}},
    "models": {
        # anthropic is the cheaper (translated for an OpenAI client: the full or try lane)
        "cost-m": {"routes": [{"provider": "openai", "model": "gpt-4o-mini"}, {"provider": "anthropic", "model": "claude-3-5-haiku"}],
                   "policy": {"kind": "cost"}},
        # two OpenAI-shaped providers on the two fakes: the direct lane (its access log feeds the stats)
        "lat-m": {"routes": [{"provider": "openai"}, {"provider": "openai-b"}], "policy": {"kind": "latency"}},
        "canary-m": {"routes": [{"provider": "openai"}, {"provider": "openai-b"}],
                     "policy": {"override_header": True, "tenants": {"globex": "openai-b"}}},
    },
    "quota": {"prices": PRICES},
}  # fmt: skip
MSG = [{"role": "user", "content": "Say hello"}]


@pytest.fixture(scope="module", params=sorted(FRONT_SERVICES))
def gw(request, tmp_path_factory, fake_openai, fake_anthropic) -> Iterator[Stack]:
    yield from front_stack(
        request.param, tmp_path_factory.mktemp("stack"), fake_openai.url, fake_anthropic.url, EXTRA
    )


def client(gw: Stack, key: str = "acme") -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url + "/v1", api_key=gw.keys[key].key, max_retries=0, timeout=20)


def ask(
    gw: Stack, model: str, key: str = "acme", headers: dict[str, str] | None = None, stream: bool = False
) -> str:
    """The provider that answered (the gateway's response header)."""
    raw = client(gw, key).chat.completions.with_raw_response.create(
        model=model, messages=MSG, max_tokens=20, stream=stream, extra_headers=headers or {},
        **({"stream_options": {"include_usage": True}} if stream else {}),
    )  # fmt: skip
    if stream:
        assert "hello" in "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices).lower()
    else:
        assert "hello" in (raw.parse().choices[0].message.content or "").lower()
    return raw.headers["x-sidegate-provider"]


def test_cost_picks_the_cheaper_healthy_provider(gw, fake_openai, fake_anthropic):
    for stream in (False, True, False):
        assert ask(gw, "cost-m", stream=stream) == "anthropic"
    assert len(fake_anthropic.requests) == 3 and not fake_openai.requests
    led = gw.wait_ledger(lambda r: r.model == "cost-m")
    assert led.provider == "anthropic" and led.upstream_model == "claude-3-5-haiku"
    # the cheaper one fails: the chain's fallback answers, as on any route
    fake_anthropic.script([{"status": 503, "error": "overloaded"}])
    assert ask(gw, "cost-m") == "openai"


def test_swapped_prices_pick_the_other(gw, fake_openai, fake_anthropic, tmp_path):
    """The prices of the config the stack runs (a restarted stack here; a live change later)."""
    extra = copy.deepcopy(EXTRA)
    extra["quota"]["prices"] = {
        "gpt-4o-mini": PRICES["claude-3-5-haiku"],
        "claude-3-5-haiku": PRICES["gpt-4o-mini"],
    }
    front = "http" if gw.cfg_data["services"].get("front") == "http" else "ext_proc"
    stack = front_stack(front, tmp_path, fake_openai.url, fake_anthropic.url, extra)
    swapped = next(stack)
    try:
        assert [ask(swapped, "cost-m") for _ in range(3)] == ["openai"] * 3
        assert len(fake_openai.requests) == 3 and not fake_anthropic.requests
    finally:
        stack.close()


def test_latency_moves_away_from_a_slowed_provider(gw, fake_openai, fake_anthropic):
    fakes = {"openai": fake_openai, "openai-b": fake_anthropic}
    fast, other = "openai", "openai-b"
    # `other` starts clearly slower: two providers a millisecond apart can rank differently in the
    # two workers' stats, and the one slowed next might then get no request at all. The stats come
    # from the access log, flushed on an interval: ask until every worker has them (bounded).
    fakes[other].set_default({"delay_s": 0.05})
    served: list[str] = []
    try:
        deadline = time.monotonic() + 15
        while len(served) < 200 and time.monotonic() < deadline and served[-4:] != [fast] * 4:
            served.append(ask(gw, "lat-m", stream=len(served) % 2 == 1))
    finally:
        fakes[other].set_default(None)
    assert set(served) == {fast, other} and served[-4:] == [fast] * 4, served  # explored, then the fastest
    fakes[fast].set_default({"delay_s": 0.4})  # the fastest turns slow
    started = time.monotonic()
    moved_at = None
    for i in range(60):  # bounded: ~0.4 s at most per request
        if ask(gw, "lat-m", stream=i % 2 == 1) == other:
            recent = [ask(gw, "lat-m") for _ in range(5)]
            if recent.count(other) >= 4:  # (one may still explore the slowed one)
                moved_at = time.monotonic() - started
                break
    assert moved_at is not None and moved_at < 10, moved_at
    fakes[fast].set_default(None)
    # each worker shares its stats through the store every SYNC_S (sidegate/features/route/latency.py):
    # the move can be seen before the next sync wrote the slowed sample, so wait a few syncs for it
    assert gw.sup is not None
    r = redis.Redis.from_url(gw.sup.redis_url)
    entries: list[dict] = []
    try:
        deadline = time.monotonic() + 10 * SYNC_S
        while True:
            entries = [orjson.loads(v) for v in r.hgetall("sg:lat:lat-m").values()]
            if any(e["p"].get(fast, [0])[0] > 100 for e in entries) or time.monotonic() > deadline:
                break
            time.sleep(SYNC_S / 5)
    finally:
        r.close()
    assert entries and all(set(e["p"]) <= {"openai", "openai-b"} for e in entries)
    assert any(e["p"].get(fast, [0])[0] > 100 for e in entries), entries  # the slowed one's TTFT EWMA (ms)


def test_header_and_tenant_overrides(gw, fake_openai, fake_anthropic):
    assert ask(gw, "canary-m") == "openai"  # the chain's order
    assert ask(gw, "canary-m", headers={PROVIDER_OVERRIDE_HEADER: "openai-b"}) == "openai-b"
    assert ask(gw, "canary-m", key="globex") == "openai-b"  # the tenant's canary
    assert (
        ask(gw, "canary-m", key="globex", headers={PROVIDER_OVERRIDE_HEADER: "openai"}) == "openai"
    )  # header first
    assert "x-sidegate-provider" not in fake_openai.requests[-1].headers  # the client's choice stays here
    with pytest.raises(openai.BadRequestError) as err:
        ask(gw, "canary-m", headers={PROVIDER_OVERRIDE_HEADER: "elsewhere"})
    assert (
        err.value.body["type"] == "invalid_request_error"
        and err.value.body["param"] == PROVIDER_OVERRIDE_HEADER
    )
    # a model without override_header ignores the header (the client cannot steer it)
    assert ask(gw, "cost-m", headers={PROVIDER_OVERRIDE_HEADER: "openai"}) == "anthropic"


def test_access_log_and_metric_carry_the_decision(gw):
    rids = {}
    for model, key, headers in (("cost-m", "acme", {}), ("canary-m", "globex", {}), ("canary-m", "acme", {PROVIDER_OVERRIDE_HEADER: "openai"}),
                                ("gpt-4o-mini", "acme", {})):  # fmt: skip
        rid = f"pol-{uuid.uuid4().hex[:12]}"
        ask(gw, model, key=key, headers={"x-request-id": rid, **headers})
        rids[rid] = model
    want = {
        "cost-m": ("cost", "cost:cheapest"),
        "canary-m": ("ordered", "override:"),
        "gpt-4o-mini": ("ordered", "ordered"),
    }
    deadline = time.monotonic() + 20  # Envoy flushes its stdout access log every 10 s
    while time.monotonic() < deadline:
        entries = [
            orjson.loads(ln[ln.index("{") :])
            for ln in gw.logs().splitlines()
            if '"request_id"' in ln and any(r in ln for r in rids)
        ]
        if len(entries) == len(rids):
            for e in entries:
                policy, reason = want[rids[e["request_id"]]]
                assert e["policy"] == policy and e["reason"].startswith(reason), e
            assert {e["reason"] for e in entries if e["model"] == "canary-m"} == {
                "override:tenant",
                "override:header",
            }
            break
        time.sleep(0.2)
    else:
        raise AssertionError("no access log entries with the request ids")
    text = httpx.get(f"http://127.0.0.1:{gw.cfg_data['services']['metrics_port']}/metrics", timeout=5).text
    assert (
        'sidegate_route_decisions_total{model="cost-m",policy="cost",provider="anthropic",reason="cost:cheapest"}'
        in text
    )
