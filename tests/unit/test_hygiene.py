"""Header and body hygiene, pure parts: the allow-list regexes, the config field, the per-try
stage's narrowing and key scrubbing (tests/e2e/test_header_hygiene.py proves them through Envoy)."""

from __future__ import annotations

import random
import re
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from sidegate import config, headers
from sidegate.bootstrap import hygiene, render
from sidegate.config import ProviderConfig
from sidegate.core.tries import TryStage

OPENAI_KEY = "sk-openai-provider-key-0001"
ANTH_KEY = "sk-ant-provider-key-0002"


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTH_KEY)


def cfg() -> config.SidegateConfig:
    return config.parse({
        "providers": {
            "openai": {"api": "openai", "base_url": "https://api.openai.com", "api_key_env": "OPENAI_API_KEY"},
            "org": {"api": "openai", "base_url": "https://api.openai.com", "api_key_env": "OPENAI_API_KEY",
                    "forward_client_headers": ["OpenAI-Organization", "x-stainless-*"]},
            "anthropic": {"api": "anthropic", "base_url": "https://api.anthropic.com", "api_key_env": "ANTHROPIC_API_KEY"},
        },
        "models": {
            "gpt-4o-mini": {"routes": [{"provider": "openai"}, {"provider": "org"}],
                            "cache": {"exact": True}},
            "claude": {"routes": [{"provider": "anthropic", "model": "claude-3-5-haiku-20241022"}]},
        },
    }, env={"OPENAI_API_KEY": OPENAI_KEY, "ANTHROPIC_API_KEY": ANTH_KEY})  # fmt: skip


def test_complement_regex_matches_exactly_the_names_off_the_list():
    """Envoy runs it with RE2 (full match); this syntax subset means the same in Python's re."""
    c = cfg()
    rng = random.Random(7)
    for patterns in (headers.request_allowed(c.providers["org"]), headers.request_allowed(c.providers["anthropic"]),
                     headers.RESPONSE_ALLOWED):  # fmt: skip
        rx = re.compile(hygiene.complement_regex(patterns))
        names = ["", "x", ":path", "content-type", "content-types", "content-typ", "authorization", "cookie",
                 "x-stainless-os", "x-stainless-", "x-stainles", "openai-organization", "openai-organizations",
                 "x-ratelimit-limit-requests", "anthropic-ratelimit-tokens-reset", "anthropic-organization-id"]  # fmt: skip
        stems = [p.rstrip("*") for p in patterns] + names
        for _ in range(5000):
            s = rng.choice(stems)
            names.append(s[: rng.randint(0, len(s))] + "".join(rng.choice("abcdeiorstxy-:_") for _ in range(rng.randint(0, 3))))
        for n in names:
            assert (rx.fullmatch(n) is None) == headers.allowed(n, patterns), (n, patterns)


def test_request_and_response_lists():
    c = cfg()
    assert headers.allowed("openai-organization", headers.request_allowed(c.providers["org"]))
    assert not headers.allowed("openai-organization", headers.request_allowed(c.providers["openai"]))
    anth = headers.request_allowed(c.providers["anthropic"])
    assert headers.allowed("anthropic-beta", anth) and not headers.allowed("openai-beta", anth)
    for never in ("authorization", "x-api-key", "cookie", "proxy-authorization", "x-forwarded-for", "x-goog-api-key",
                  "x-sidegate-route", "accept-encoding", "x-real-ip", "forwarded"):  # fmt: skip
        assert not any(headers.allowed(never, headers.request_allowed(p)) for p in c.providers.values()), never
    resp = (":*", *headers.RESPONSE_HEADERS_FORWARDED)
    assert headers.allowed("x-ratelimit-remaining-tokens", resp) and headers.allowed("request-id", resp)
    for never in ("authorization", "set-cookie", "openai-organization", "anthropic-organization-id", "x-sidegate-provider"):
        assert not headers.allowed(never, resp), never


def test_rendered_chains_filter_before_and_after_the_gateways_filters():
    boot = render.bootstrap(cfg())
    assert boot["layered_runtime"]["layers"][0]["static_layer"]["re2.max_program_size.error_level"] >= 1024
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    router = hcm["http_filters"][-1]["typed_config"]
    assert router["suppress_envoy_headers"] is True
    # The full lane: the per-try stage applies the lists (no regex a mesh sidecar would refuse).
    assert [f["name"] for f in router["upstream_http_filters"]] == ["sidegate.upstream", "sidegate.whole_answer",
                                                                     "envoy.filters.http.upstream_codec"]
    clusters = {c["name"]: c for c in boot["static_resources"]["clusters"]}
    opts = clusters["provider.openai~direct"]["typed_extension_protocol_options"]
    (mut,) = opts["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["http_filters"][:-1]
    req = mut["typed_config"]["mutations"]["request_mutations"]
    assert "remove_on_match" in req[0] and req[1]["append"]["header"]["key"] == "authorization"  # filter, then the key
    assert "remove_on_match" in mut["typed_config"]["mutations"]["response_mutations"][0]


def test_forward_client_headers_is_validated():
    ok = ProviderConfig(api="openai", base_url="http://x", forward_client_headers=["OpenAI-Project", "x-stainless-*"])
    assert ok.forward_client_headers == ["openai-project", "x-stainless-*"]
    for bad in ("cookie", "Authorization", "x-goog-api-key", "proxy-authorization", "x-forwarded-for", "x-sidegate-route",
                "x-envoy-foo", "x-*", "x-goog-*", "*", "a b", ":path", "accept-encoding"):  # fmt: skip
        with pytest.raises(ValidationError):
            ProviderConfig(api="openai", base_url="http://x", forward_client_headers=[bad])


class _Filler:
    def __init__(self) -> None:
        self.filled: list[bytes] = []

    def fill(self, meta: dict[str, Any], client_body: Any, response: bytes, streamed: bool, usage: Any = None) -> None:
        self.filled.append(response)


def _try(up: TryStage, cluster: str = "provider.openai", attempt: int = 1, **meta: Any):
    return up.start_try({"api": "openai", "model": "gpt-4o-mini", **meta}, cluster, attempt)


def test_per_try_stage_applies_its_providers_lists():
    up = TryStage(cfg())
    client = [":path", "content-type", "openai-organization", "x-stainless-os", "accept", "cookie", "x-forwarded-for",
              "user-agent", "x-goog-api-key", "proxy-authorization", "x-request-id"]  # fmt: skip
    refused = _try(up).request_headers(client).remove
    assert set(refused) >= {"openai-organization", "x-stainless-os", "cookie", "x-forwarded-for", "x-goog-api-key", "proxy-authorization"}
    assert "user-agent" not in refused and "x-request-id" not in refused
    _, changes = _try(up).response_headers(200, {":status": "200", "content-type": "application/json", "x-request-id": "r1",
                                                 "set-cookie": "a=b", "openai-organization": "o", "x-sidegate-provider": "forged",
                                                 "x-ratelimit-remaining-tokens": "5"})  # fmt: skip
    assert set(changes.remove) == {"content-length", "set-cookie", "openai-organization"}  # x-sidegate-provider: overwritten
    assert changes.set["x-sidegate-provider"] == "openai"
    kept = _try(up, "provider.org", 2).request_headers(client).remove
    assert "openai-organization" not in kept and "x-stainless-os" not in kept
    t = _try(up)
    assert t.body_unchanged and t.request_headers(client).set[":path"] == "/v1/chat/completions"  # no client query


def _chat(content: str) -> bytes:
    return orjson.dumps({"id": "c1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})  # fmt: skip


def test_echoed_key_is_scrubbed_from_bodies_and_headers_and_never_cached():
    filler = _Filler()
    up = TryStage(cfg(), filler=filler)
    t = _try(up, cache_fill="k1")
    _, changes = t.response_headers(200, {":status": "200", "content-type": "application/json", "x-request-id": OPENAI_KEY,
                                          "request-id": f"r-{ANTH_KEY}", "openai-version": "2020-10-01"})  # fmt: skip
    assert {"x-request-id", "request-id"} <= set(changes.remove) and "openai-version" not in changes.remove
    out = t.response_body(_chat(f"key {OPENAI_KEY} and {ANTH_KEY}"))
    assert OPENAI_KEY.encode() not in out and ANTH_KEY.encode() not in out and b"[redacted]" in out
    assert filler.filled == []
    clean = _try(up, cache_fill="k2")
    clean.response_headers(200, {":status": "200", "content-type": "application/json"})
    assert OPENAI_KEY.encode() not in clean.response_body(_chat("hello"))
    assert len(filler.filled) == 1  # a clean answer is cached (the check above is not vacuous)


def _sse(content: str) -> bytes:
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
             "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]}  # fmt: skip
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def test_stream_chunks_are_scrubbed_and_such_a_stream_is_not_cached():
    filler = _Filler()
    up = TryStage(cfg(), filler=filler)
    t = _try(up, stream=True, want_usage=True, cache_fill="k3")
    t.response_headers(200, {":status": "200", "content-type": "text/event-stream"})
    out = t.response_chunk(_sse(f"echo {OPENAI_KEY}"), False)
    assert OPENAI_KEY.encode() not in out and b"[redacted]" in out
    t.response_chunk(b"data: [DONE]\n\n", True)
    assert filler.filled == []
    clean = _try(up, stream=True, want_usage=True, cache_fill="k4")
    clean.response_headers(200, {":status": "200", "content-type": "text/event-stream"})
    clean.response_chunk(_sse("hello"), False)
    clean.response_chunk(b"data: [DONE]\n\n", True)
    assert len(filler.filled) == 1
