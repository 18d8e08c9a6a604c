"""`POST /v1/embeddings` and `POST /v1/messages/count_tokens` through a real Envoy on both fronts,
with the official SDKs as clients.

Embeddings: every input form, `dimensions`, float and base64 (the openai SDK's default), on the
direct lane (`text-embedding-3-small`: Envoy alone), through the per-try stage (`emb-renamed`),
across a fallback, with the quota charged the provider's `usage.prompt_tokens`, a price, a ledger
record naming the endpoint, and an exact cache hit without a provider call (`emb-cached`).
count_tokens: forwarded to the Anthropic provider of an Anthropic chain, estimated by the gateway
for an OpenAI-routed model; never charged, never recorded.
"""

from __future__ import annotations

import asyncio
import base64
import struct
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from harness import FRONT_SERVICES, Stack, front_stack
from redis.asyncio import Redis

from sidegate import keys
from sidegate.fakes import wire_anthropic
from sidegate.features.quota import QuotaStore
from sidegate.features.quota.tokens import TokenCounter
from sidegate.store import RedisPyStore

pytestmark = pytest.mark.e2e
PRICE = 1000.0  # USD per million input tokens: large enough to show in the ledger's 6 decimals
OWN_KEYS = {tenant: keys.new_key() for tenant in ("metered", "counter")}
"""Keys of tenants one test each uses alone (`metered`: the quota test, `counter`: the count
test): the quota's sliding window holds that test's tokens only."""
EXTRA: dict[str, Any] = {
    "defaults": {"guard": None},
    "providers": {
        "openai-b": {"api": "openai", "base_url": "FAKE_OPENAI", "api_key_env": "E2E_OPENAI_KEY"},
        "azure": {"api": "openai", "base_url": "FAKE_OPENAI", "api_key_env": "E2E_OPENAI_KEY", "auth": "api-key",
                  "path_prefix": "/openai/deployments/{model}", "query": "api-version=2024-10-21"},
    },
    "models": {
        "text-embedding-3-small": {"routes": [{"provider": "openai"}]},
        "emb-renamed": {"routes": [{"provider": "openai", "model": "text-embedding-3-large"}]},
        "emb-fallback": {"routes": [{"provider": "openai", "model": "text-embedding-3-small"},
                                    {"provider": "openai-b", "model": "text-embedding-3-small"}]},
        "claude-fallback": {"routes": [{"provider": "anthropic", "model": "claude-3-5-haiku-20241022"},
                                       {"provider": "openai", "model": "gpt-4o-mini"}]},
        "emb-guarded": {"routes": [{"provider": "openai"}], "guard": {}},  # the default guard policy
        "emb-azure": {"routes": [{"provider": "azure", "model": "my-embedding-deployment"}]},
        "emb-cached": {"routes": [{"provider": "openai", "model": "text-embedding-3-small"}], "cache": {"exact": True}},
    },
    "quota": {"prices": {"text-embedding-3-small": {"input_per_mtok": PRICE, "output_per_mtok": 0}}},
    "tenants": {
        tenant: {"keys": [{"id": kid, "hash": keys.hash_key(key), "models": ["*"]}], "quota": {"limits": {"tpm": 10_000_000}}}
        for tenant, (key, kid) in OWN_KEYS.items()
    },
}  # fmt: skip


@pytest.fixture(scope="module", params=sorted(FRONT_SERVICES))
def gw(request, tmp_path_factory, fake_openai, fake_anthropic) -> Iterator[Stack]:
    yield from front_stack(
        request.param, tmp_path_factory.mktemp("stack"), fake_openai.url, fake_anthropic.url, EXTRA
    )


def _openai(gw: Stack, key: str = "globex") -> openai.OpenAI:
    secret = OWN_KEYS[key][0] if key in OWN_KEYS else gw.keys[key].key
    return openai.OpenAI(base_url=gw.base_url + "/v1", api_key=secret, max_retries=0, timeout=20)


def _anthropic(gw: Stack, key: str = "globex") -> anthropic.Anthropic:
    secret = OWN_KEYS[key][0] if key in OWN_KEYS else gw.keys[key].key
    return anthropic.Anthropic(base_url=gw.base_url, api_key=secret, max_retries=0, timeout=20)


def _usage(gw: Stack, tenant: str) -> dict[str, Any]:
    """The tenant scope's requests and tokens in the window, and its spend of the day."""

    async def go() -> dict[str, Any]:
        assert gw.sup is not None
        r = Redis.from_url(gw.sup.redis_url)
        try:
            scopes = (await QuotaStore(RedisPyStore(r)).usage(tenant))["scopes"]
            return dict(scopes.get(f"tenant:{tenant}", {"tokens": 0, "requests": 0, "spent_day_usd": 0.0}))
        finally:
            await r.aclose()

    return asyncio.run(go())


def _tokens(gw: Stack, tenant: str = "globex") -> int:
    return int(_usage(gw, tenant)["tokens"])


def _settled(gw: Stack, tenant: str = "globex", quiet_s: float = 0.5, timeout_s: float = 5.0) -> int:
    """The tenant's tokens once nothing moves for `quiet_s` (true-ups are asynchronous: the direct
    lane's comes from Envoy's access log, batched)."""
    deadline = time.monotonic() + timeout_s
    last, since = _tokens(gw, tenant), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        got = _tokens(gw, tenant)
        if got != last:
            last, since = got, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
    return last


@pytest.mark.parametrize("model", ["text-embedding-3-small", "emb-renamed"])
def test_every_input_form_and_both_encodings(gw: Stack, fake_openai, model: str) -> None:
    """The direct lane and the per-try stage answer each form as OpenAI would: one embedding per
    input, `dimensions` honoured, the SDK's base64 (its default) decoded to the same floats."""
    client = _openai(gw)
    per_try_before = _per_try(gw)
    as_float = client.embeddings.create(model=model, input="the quick brown fox", encoding_format="float")
    as_b64 = client.embeddings.create(model=model, input="the quick brown fox")  # the SDK asks base64
    sent = fake_openai.requests[-1]
    assert sent.path == "/v1/embeddings" and sent.json["encoding_format"] == "base64"
    assert sent.json["model"] == ("text-embedding-3-large" if model == "emb-renamed" else model)
    assert "authorization" in sent.headers and gw.keys["globex"].key not in str(sent.headers)
    assert as_b64.data[0].embedding == pytest.approx(as_float.data[0].embedding, abs=1e-6)
    assert as_float.usage.prompt_tokens == 4 and as_float.model == sent.json["model"]
    batch = client.embeddings.create(model=model, input=["one", "two words"], dimensions=8)
    assert [(d.index, len(d.embedding)) for d in batch.data] == [
        (0, 8),
        (1, 8),
    ] and batch.usage.prompt_tokens == 3
    assert len(client.embeddings.create(model=model, input=[5, 6, 7]).data) == 1
    tokens = client.embeddings.create(model=model, input=[[1, 2], [3, 4, 5]], dimensions=4)
    assert len(tokens.data) == 2 and tokens.usage.prompt_tokens == 5
    raw = httpx.post(gw.base_url + "/v1/embeddings", timeout=10, headers={"authorization": f"Bearer {gw.keys['globex'].key}"},
                     json={"model": model, "input": "x", "encoding_format": "base64", "dimensions": 3})  # fmt: skip
    floats = struct.unpack(
        "<3f", base64.b64decode(raw.json()["data"][0]["embedding"])
    )  # little-endian float32
    assert raw.status_code == 200 and len(floats) == 3
    # Envoy alone serves the same model name on a direct provider; a renamed model needs the per-try stage.
    assert _per_try(gw) - per_try_before == (0 if model == "text-embedding-3-small" else 6)


def _per_try(gw: Stack) -> int:
    """Tries that ran the per-try stage: gRPC streams, or the try lane's (HTTP front) requests."""
    return (gw.stat("http.sidegateext_proc.upstream.streams_started") or 0) + sum(
        gw.stat(f"cluster.provider.{p}~try.upstream_rq_total") or 0 for p in ("openai", "openai-b")
    )


def test_an_azure_deployment_gets_its_own_path(gw: Stack, fake_openai) -> None:
    out = _openai(gw).embeddings.create(model="emb-azure", input=["one", "two three"], dimensions=4)
    assert [len(d.embedding) for d in out.data] == [4, 4] and out.usage.prompt_tokens == 3
    sent = fake_openai.requests[-1]
    assert sent.path == "/openai/deployments/my-embedding-deployment/embeddings"
    assert (
        sent.query == {"api-version": "2024-10-21"}
        and "api-key" in sent.headers
        and "authorization" not in sent.headers
    )


def test_quota_budget_and_ledger_are_charged_the_providers_prompt_tokens(gw: Stack) -> None:
    """A word the gateway's tokenizer splits in many tokens, the fake counts as one: the quota
    reserved the estimate (> 1) and was trued up to the provider's count; the day's spend is
    that count at the embedding price; the ledger records the endpoint."""
    long_word = "supercalifragilisticexpialidocious"
    assert (
        TokenCounter().embeddings_input({"model": "text-embedding-3-small", "input": [long_word, "gamma"]})
        > 2
    )
    r = _openai(gw, "metered").embeddings.with_raw_response.create(
        model="text-embedding-3-small", input=[long_word, "gamma"]
    )
    assert r.parse().usage.prompt_tokens == 2
    assert int(r.headers["x-ratelimit-limit-tokens"]) == 10_000_000  # the quota admitted it
    assert _settled(gw, "metered") == 2
    usage = _usage(gw, "metered")
    assert usage["requests"] == 1 and usage["spent_day_usd"] == pytest.approx(2 * PRICE / 1e6)
    rec = gw.wait_ledger(lambda x: x.tenant == "metered")
    assert (rec.endpoint, rec.model, rec.provider, rec.status) == (
        "embeddings",
        "text-embedding-3-small",
        "openai",
        200,
    )
    assert (rec.input_tokens, rec.output_tokens, rec.cost_usd) == (2, 0, pytest.approx(2 * PRICE / 1e6))


def test_a_failing_first_provider_falls_back(gw: Stack, fake_openai) -> None:
    fake_openai.script([{"status": 503, "model": "text-embedding-3-small"}])
    r = _openai(gw).embeddings.with_raw_response.create(model="emb-fallback", input="hello there")
    assert r.parse().usage.prompt_tokens == 2
    assert (r.headers["x-sidegate-provider"], r.headers["x-sidegate-attempts"]) == ("openai-b", "2")
    assert [q.path for q in fake_openai.requests] == ["/v1/embeddings", "/v1/embeddings"]
    rec = gw.wait_ledger(lambda x: x.model == "emb-fallback")
    assert (rec.endpoint, rec.attempts, rec.provider, rec.input_tokens) == ("embeddings", 2, "openai-b", 2)


def test_an_exact_cache_hit_asks_no_provider(gw: Stack, fake_openai) -> None:
    client = _openai(gw)
    text = f"cache me {gw.base_url}"  # unique per stack: the fronts share the fake
    first = client.embeddings.with_raw_response.create(model="emb-cached", input=text, dimensions=8)
    assert first.headers.get("x-sidegate-cache") != "hit-exact"
    hit = None
    for _ in range(50):  # the fill is asynchronous
        hit = client.embeddings.with_raw_response.create(model="emb-cached", input=text, dimensions=8)
        if hit.headers.get("x-sidegate-cache") == "hit-exact":
            break
        time.sleep(0.1)
    assert hit is not None and hit.headers.get("x-sidegate-cache") == "hit-exact"
    assert hit.parse().data[0].embedding == first.parse().data[0].embedding
    seen = len(fake_openai.requests)
    again = client.embeddings.with_raw_response.create(model="emb-cached", input=text, dimensions=8)
    assert again.headers.get("x-sidegate-cache") == "hit-exact" and len(fake_openai.requests) == seen
    other = client.embeddings.with_raw_response.create(
        model="emb-cached", input=text, dimensions=4
    )  # another key
    assert other.headers.get("x-sidegate-cache") != "hit-exact" and len(other.parse().data[0].embedding) == 4
    rec = gw.wait_ledger(lambda x: x.model == "emb-cached" and x.cache == "hit_exact")
    assert (rec.endpoint, rec.provider, rec.attempts) == ("embeddings", "cache", 0)


def test_the_guard_redacts_secrets_in_embeddings_and_leaves_the_rest(gw: Stack, fake_openai) -> None:
    """The default policy redacts every PII type; on embeddings only a credential is redacted (the
    HTTP front redacts it in the try, its body being fixed), an e-mail address is embedded as is."""
    secret = "sk-proj-" + "Q7x9Lm2Vb8Nk4Rt6Yp1Zs3Wd5Fg0Hj"
    out = _openai(gw).embeddings.create(
        model="emb-guarded", input=["write to jane@example.com", f"my key {secret}"]
    )
    assert len(out.data) == 2
    sent = fake_openai.requests[-1]
    assert sent.json["input"][0] == "write to jane@example.com"
    assert secret not in sent.body.decode() and sent.json["input"][1].startswith("my key <")


def test_refusals_in_openais_format(gw: Stack) -> None:
    client = _openai(gw)
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model="claude-haiku", input="x")  # an Anthropic chain cannot embed
    assert err.value.code == "model_not_supported"
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model="text-embedding-3-small", input=[])
    assert err.value.param == "input"
    with pytest.raises(openai.PermissionDeniedError):
        _openai(gw, "acme-limited").embeddings.create(model="text-embedding-3-small", input="x")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gw.base_url + "/v1", api_key="sgk_nope", max_retries=0).embeddings.create(
            model="text-embedding-3-small", input="x"
        )


MESSAGES = [{"role": "user", "content": "How many tokens does this question take?"}]


def test_count_tokens_forwarded_to_anthropic_and_estimated_elsewhere(
    gw: Stack, fake_openai, fake_anthropic
) -> None:
    client = _anthropic(gw, "counter")
    forwarded = client.messages.with_raw_response.count_tokens(
        model="claude-haiku", messages=MESSAGES, system="Be brief."
    )
    sent = fake_anthropic.requests[-1]
    assert sent.path == "/v1/messages/count_tokens" and sent.json["model"] == "claude-3-5-haiku-20241022"
    assert sent.headers["x-api-key"] != gw.keys["globex"].key and "anthropic-version" in sent.headers
    assert forwarded.headers["x-sidegate-token-count"] == "provider"
    assert forwarded.parse().input_tokens == orjson_count(sent.json)
    beta = client.beta.messages.count_tokens(  # `?beta=true` and an anthropic-beta header
        model="claude-haiku", messages=MESSAGES, betas=["token-efficient-tools-2025-02-19"]
    )
    sent = fake_anthropic.requests[-1]
    assert (
        sent.path == "/v1/messages/count_tokens" and not sent.query
    )  # the client's query is never forwarded
    assert "token-efficient-tools-2025-02-19" in sent.headers["anthropic-beta"].split(
        ","
    )  # (the SDK adds its own)
    assert beta.input_tokens == orjson_count(sent.json)

    seen = len(fake_openai.requests)
    estimated = client.messages.with_raw_response.count_tokens(
        model="gpt-4o-mini", messages=MESSAGES, system="Be brief."
    )
    assert estimated.headers["x-sidegate-token-count"] == "estimate" and len(fake_openai.requests) == seen
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "system": "Be brief."}
    assert estimated.parse().input_tokens == TokenCounter().anthropic_messages(body)

    with pytest.raises(anthropic.BadRequestError) as err:  # Anthropic's format
        client.messages.count_tokens(model="claude-haiku", messages=[])
    assert err.value.body["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.PermissionDeniedError):
        _anthropic(gw, "acme-limited").messages.count_tokens(model="claude-haiku", messages=MESSAGES)
    # Never charged, never recorded: an embedding after them (recorded after them, since records
    # are written in order) is the tenant's only record and its only quota use.
    _openai(gw, "counter").embeddings.create(model="text-embedding-3-small", input="marker")
    gw.wait_ledger(lambda x: x.tenant == "counter")
    assert [(r.endpoint, r.model) for r in gw.ledger() if r.tenant == "counter"] == [
        ("embeddings", "text-embedding-3-small")
    ]
    assert _settled(gw, "counter") == 1 and _usage(gw, "counter")["requests"] == 1


def orjson_count(body: dict[str, Any]) -> int:
    import orjson

    return int(orjson.loads(wire_anthropic.count_tokens(body))["input_tokens"])


def test_a_count_falling_back_to_an_openai_provider_gets_the_estimate(
    gw: Stack, fake_openai, fake_anthropic
) -> None:
    """A chain that starts at Anthropic forwards the count; when Anthropic fails and Envoy retries
    on the OpenAI fallback, that try answers the gateway's estimate instead of an error."""
    client = _anthropic(gw)
    ok = client.messages.with_raw_response.count_tokens(model="claude-fallback", messages=MESSAGES)
    assert (
        ok.headers["x-sidegate-token-count"] == "provider"
        and fake_anthropic.requests[-1].path == "/v1/messages/count_tokens"
    )
    fake_anthropic.script([{"path": "/v1/messages/count_tokens", "status": 503}])
    seen = len(fake_openai.requests)
    fell = client.messages.with_raw_response.count_tokens(model="claude-fallback", messages=MESSAGES)
    assert fell.headers["x-sidegate-token-count"] == "estimate"
    expected = TokenCounter().anthropic_messages({"model": "claude-fallback", "messages": MESSAGES})
    assert fell.parse().input_tokens == expected
    assert (
        len(fake_openai.requests) == seen and not fake_anthropic.pending_script
    )  # Anthropic was tried, OpenAI never
