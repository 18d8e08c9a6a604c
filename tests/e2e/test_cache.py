"""Issue 6: exact and semantic cache hits answered inside ext_proc, through a real Envoy."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

pytestmark = pytest.mark.e2e
STACK_EXTRA = {
    "models": {
        "gpt-4o-mini": {"routes": [{"provider": "openai"}], "cache": {"exact": True, "semantic": True, "threshold": 0.9}},
        "gpt-4o": {"routes": [{"provider": "openai", "model": "gpt-4o-2024-08-06"}], "cache": {"exact": True, "semantic": True, "threshold": 0.9}},
    }
}
Q = "What is the capital of France?"
PARA = "Which city is the capital of France?"  # 0.94 to Q with the fp32 and the int8 model alike (docs/cache.md)


def oai(stack, key="acme") -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url + "/v1", api_key=stack.keys[key].key, max_retries=0, timeout=20)


def ask(stack, text: str, key="acme", model="gpt-4o-mini", **kw):
    return oai(stack, key).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], **kw
    )


def _wait_filled(stack, text: str, timeout: float = 10.0, **kw) -> None:
    """Fills are asynchronous: poll with a no-store probe? No: poll the exact key by asking again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = ask(stack, text, **kw)
        if r.headers.get("x-sidegate-cache", "").startswith("hit"):
            return
        time.sleep(0.2)
    raise AssertionError("cache was never filled")


def test_exact_then_semantic_hit_and_misses(stack, fake_openai):
    first = ask(stack, Q)
    assert first.headers.get("x-sidegate-cache") in (None, "miss")
    _wait_filled(stack, Q)
    n = len(fake_openai.requests)
    hit = ask(stack, Q)
    assert hit.headers["x-sidegate-cache"] == "hit-exact"
    assert hit.parse().choices[0].message.content == first.parse().choices[0].message.content
    sem = ask(stack, PARA)
    assert sem.headers["x-sidegate-cache"] == "hit-semantic"
    assert float(sem.headers["x-sidegate-cache-similarity"]) >= 0.9
    assert len(fake_openai.requests) == n  # hits never reached the provider
    # Misses: unrelated question, another tenant, another model, another temperature.
    for kwargs in ({"text": "How do I bake sourdough bread?"}, {"text": Q, "key": "globex"},
                   {"text": Q, "model": "gpt-4o"}, {"text": Q, "temperature": 0.2}):  # fmt: skip
        text = kwargs.pop("text")
        r = ask(stack, text, **kwargs)
        assert not r.headers.get("x-sidegate-cache", "").startswith("hit"), kwargs
    assert len(fake_openai.requests) == n + 4


def test_streamed_hit_is_a_valid_sse_replay(stack, fake_openai):
    q = "Which river flows through Paris?"
    list(oai(stack).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": q}], stream=True))
    _wait_filled(stack, q)
    n = len(fake_openai.requests)
    with oai(stack).chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": q}], stream=True, stream_options={"include_usage": True}
    ) as resp:
        assert resp.headers["x-sidegate-cache"] == "hit-exact"
        assert resp.headers["content-type"].startswith("text/event-stream")
        chunks = list(resp.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None
    assert len(fake_openai.requests) == n


def test_client_bypass(stack, fake_openai):
    q = "Name a famous French painter."
    ask(stack, q)
    _wait_filled(stack, q)
    n = len(fake_openai.requests)
    r = httpx.post(stack.base_url + "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": q}]},
                   headers={"authorization": f"Bearer {stack.keys['acme'].key}", "cache-control": "no-cache"})  # fmt: skip
    assert r.status_code == 200 and not r.headers.get("x-sidegate-cache", "").startswith("hit")
    assert len(fake_openai.requests) == n + 1
