"""The direct lane (docs/performance.md): non-streaming requests whose providers take the client's
body as is go through Envoy with no per-try Python; the completion hooks learn of them from the access
log. Proven here through a real Envoy: credential swap, usage-based quota true-up, ledger,
metrics, headers, fallback across same-schema providers, and what stays in the full lane."""

from __future__ import annotations

import time

import anthropic
import openai
import pytest
from harness import ANTHROPIC_PROVIDER_KEY, OPENAI_PROVIDER_KEY

pytestmark = pytest.mark.e2e
MSG = [{"role": "user", "content": "Say hi"}]
STACK_EXTRA = {
    "providers": {"openai-b": {"api": "openai", "base_url": "FAKE_ANTHROPIC", "api_key_env": "E2E_OPENAI_KEY"}},
    "models": {
        "chain": {"routes": [{"provider": "openai"}, {"provider": "openai-b"}]},
        "claude-direct": {"routes": [{"provider": "anthropic"}]},
    },
    "tenants": {"globex": {"quota": {"limits": {"tpm": 100000}}}},
}


def oai(stack, who: str = "acme") -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url + "/v1", api_key=stack.keys[who].key, max_retries=0)


def _stat(stack, name: str) -> int:
    got = stack.stat(name)
    assert got is not None, f"no stat {name}"
    return got


UPSTREAM_STREAMS = "http.sidegateext_proc.upstream.streams_started"


def _ledger(stack, input_tokens: int, output_tokens: int):
    return stack.wait_ledger(lambda r: (r.input_tokens, r.output_tokens) == (input_tokens, output_tokens))


def test_openai_request_skips_the_per_try_stage(stack, fake_openai):
    before = _stat(stack, UPSTREAM_STREAMS)
    fake_openai.script([{"usage": {"prompt_tokens": 21, "completion_tokens": 4}}])
    raw = oai(stack).chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MSG)
    r = raw.parse()
    assert r.choices[0].message.content and r.usage.total_tokens == 25
    assert raw.headers["x-sidegate-provider"] == "openai" and raw.headers["x-sidegate-attempts"] == "1"
    assert _stat(stack, UPSTREAM_STREAMS) == before, "a direct-lane request opened a per-try ext_proc stream"
    (rec,) = fake_openai.requests
    assert rec.headers["authorization"] == f"Bearer {OPENAI_PROVIDER_KEY}"
    assert stack.keys["acme"].key not in repr(rec.headers)
    assert not any(h.startswith("x-sidegate") for h in rec.headers)
    # The completion hooks saw it through the access log: the ledger has the provider's exact usage.
    led = _ledger(stack, 21, 4)
    assert (led.input_tokens, led.output_tokens, led.provider, led.status) == (21, 4, "openai", 200)
    assert led.tenant == "acme" and not led.stream


def test_usage_read_whatever_the_json_content_type_says(stack, fake_openai):
    """OpenAI-compatible servers built on Express or gin answer `application/json; charset=utf-8`:
    Envoy reads the usage of those too (it compares the whole header value)."""
    for ctype, (p, c) in (("application/json; charset=utf-8", (17, 3)), ("application/json;charset=UTF-8", (18, 3))):
        fake_openai.script([{"usage": {"prompt_tokens": p, "completion_tokens": c}, "headers": {"content-type": ctype}}])
        raw = oai(stack).chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MSG)
        assert raw.headers["content-type"] == ctype and raw.parse().usage.total_tokens == p + c
        led = _ledger(stack, p, c)
        assert (led.provider, led.status) == ("openai", 200)
    # A spelling Envoy's filter does not list: relayed as it is (its usage is not read), not a 502.
    fake_openai.script([{"usage": {"prompt_tokens": 19, "completion_tokens": 3}, "headers": {"content-type": "Application/JSON"}}])
    raw = oai(stack).chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MSG)
    assert raw.http_response.status_code == 200 and raw.parse().usage.total_tokens == 22


def test_anthropic_request_direct(stack, fake_anthropic):
    before = _stat(stack, UPSTREAM_STREAMS)
    client = anthropic.Anthropic(base_url=stack.base_url, api_key=stack.keys["acme"].key, max_retries=0)
    raw = client.messages.with_raw_response.create(model="claude-direct", max_tokens=50, messages=MSG)
    msg = raw.parse()
    assert msg.content[0].text and msg.usage.output_tokens > 0
    assert raw.headers["x-sidegate-provider"] == "anthropic"
    assert _stat(stack, UPSTREAM_STREAMS) == before
    (rec,) = fake_anthropic.requests
    assert rec.headers["x-api-key"] == ANTHROPIC_PROVIDER_KEY
    assert rec.headers.get("anthropic-version")
    assert "authorization" not in rec.headers and stack.keys["acme"].key not in repr(rec.headers)
    led = _ledger(stack, msg.usage.input_tokens, msg.usage.output_tokens)
    assert led.provider == "anthropic" and led.model == "claude-direct"


def test_fallback_to_second_provider_in_direct_lane(stack, fake_openai, fake_anthropic):
    fake_openai.script([{"status": 429, "error": "slow down", "retry_after": 1}])
    raw = oai(stack).chat.completions.with_raw_response.create(model="chain", messages=MSG)
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-sidegate-provider"] == "openai-b" and raw.headers["x-sidegate-attempts"] == "2"
    assert len(fake_openai.requests) == 1 and len(fake_anthropic.requests) == 1
    assert fake_anthropic.requests[0].headers["authorization"] == f"Bearer {OPENAI_PROVIDER_KEY}"


def test_all_providers_fail_relays_the_last_error(stack, fake_openai, fake_anthropic):
    fake_openai.script([{"status": 503, "error": "down"}])
    fake_anthropic.script([{"status": 429, "error": "busy", "retry_after": 2}])
    with pytest.raises(openai.RateLimitError) as ei:
        oai(stack).chat.completions.create(model="chain", messages=MSG)
    assert ei.value.response.headers["retry-after"] == "2"
    assert ei.value.body and "busy" in str(ei.value.body)


def test_quota_trued_up_from_real_usage(stack, fake_openai):
    """The reservation is replaced by the provider's usage once the access log arrives."""
    client = oai(stack, "globex")
    fake_openai.script([{"usage": {"prompt_tokens": 30, "completion_tokens": 70}}])
    first = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MSG, max_tokens=2000)
    assert first.parse().usage.total_tokens == 100
    # The first answer's header shows what was reserved (prompt + max_tokens); once the log entry
    # is settled the next request sees only the 100 tokens really used.
    reserved_left = int(first.headers["x-ratelimit-remaining-tokens"])
    assert reserved_left <= 100000 - 2000
    deadline = time.monotonic() + 5
    left = 0
    while time.monotonic() < deadline:
        fake_openai.script([{"usage": {"prompt_tokens": 1, "completion_tokens": 1}}])
        nxt = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MSG, max_tokens=1)
        left = int(nxt.headers["x-ratelimit-remaining-tokens"])
        if left > reserved_left + 1000:
            break
        time.sleep(0.1)
    assert left > reserved_left + 1000, (reserved_left, left)


def test_openai_stream_with_include_usage_is_direct(stack, fake_openai):
    """The provider's stream carries the usage (the client asked): Envoy passes the events through
    and the stream watch reads the usage; the ledger gets the provider's exact numbers."""
    before = _stat(stack, UPSTREAM_STREAMS)
    fake_openai.script([{"usage": {"prompt_tokens": 23, "completion_tokens": 7}, "chunks": 4}])
    raw = oai(stack).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MSG, stream=True, stream_options={"include_usage": True})  # fmt: skip
    assert raw.headers["x-sidegate-provider"] == "openai"
    chunks = list(raw.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 7
    assert _stat(stack, UPSTREAM_STREAMS) == before, "a direct-lane stream opened a per-try ext_proc stream"
    (rec,) = fake_openai.requests
    assert rec.headers["authorization"] == f"Bearer {OPENAI_PROVIDER_KEY}"
    led = _ledger(stack, 23, 7)
    assert led.stream and led.provider == "openai" and led.status == 200


@pytest.mark.parametrize("write_size", [5, 64])
def test_direct_stream_usage_cut_across_reads_is_metered(stack, fake_anthropic, write_size):
    """The stream watch reads the usage from complete lines only: events cut anywhere (message_start's
    input side, message_delta's output total) still give the ledger the provider's exact numbers."""
    fake_anthropic.script([{"usage": {"input_tokens": 31 + write_size, "output_tokens": 9}, "chunks": 3,
                            "write_size": write_size}])  # fmt: skip
    client = anthropic.Anthropic(base_url=stack.base_url, api_key=stack.keys["acme"].key, max_retries=0)
    with client.messages.stream(model="claude-direct", max_tokens=50, messages=MSG) as s:
        assert "".join(s.text_stream)
    led = _ledger(stack, 31 + write_size, 9)
    assert led.stream and led.provider == "anthropic"


def test_anthropic_stream_is_direct(stack, fake_anthropic):
    before = _stat(stack, UPSTREAM_STREAMS)
    fake_anthropic.script([{"usage": {"input_tokens": 17, "output_tokens": 5}, "chunks": 3}])
    client = anthropic.Anthropic(base_url=stack.base_url, api_key=stack.keys["acme"].key, max_retries=0)
    with client.messages.stream(model="claude-direct", max_tokens=50, messages=MSG) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text and final.usage.output_tokens == 5
    assert _stat(stack, UPSTREAM_STREAMS) == before
    led = _ledger(stack, 17, 5)
    assert led.stream and led.provider == "anthropic"


def _per_try(stack) -> int:
    """Tries that ran the per-try stage: gRPC streams, or the try lane's (HTTP front) requests."""
    return _stat(stack, UPSTREAM_STREAMS) + sum(
        stack.stat(f"cluster.provider.{p}~try.upstream_rq_total") or 0 for p in ("openai", "anthropic"))  # fmt: skip


def test_streams_and_cache_fills_stay_in_the_full_lane(stack, fake_openai):
    before = _per_try(stack)
    chunks = list(oai(stack).chat.completions.create(model="gpt-4o-mini", messages=MSG, stream=True))
    assert chunks and all(c.choices for c in chunks)  # no include_usage: injected and stripped per try
    assert _per_try(stack) == before + 1
    # An alias (provider-side model name differs) needs the per-try body rewrite.
    oai(stack).chat.completions.create(model="gpt-4o", messages=MSG)
    assert fake_openai.requests[-1].json["model"] == "gpt-4o-2024-08-06"
    assert _per_try(stack) == before + 2
