"""Large non-streaming provider answers (issue 21): served whole up to `listener.max_response_bytes`
on every lane (direct, per-try ext_proc, try lane, cache fill) and behind both fronts; past it a
502 in the client's API format. Envoy must stay up throughout: before the limits in
sidegate/bootstrap/limits.py, a ~1.6 MB answer through the per-try ext_proc killed it (SIGSEGV)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest
from harness import Stack, front_stack
from large_helpers import ant, digest, oai, varied_text

pytestmark = pytest.mark.e2e

LIMIT = 32 * 1024 * 1024  # the default listener.max_response_bytes
MSG = [{"role": "user", "content": "Write a lot."}]
EXTRA = {
    "models": {
        "claude-direct": {"routes": [{"provider": "anthropic"}]},
        "gpt-4o-cached": {
            "routes": [{"provider": "openai", "model": "gpt-4o-2024-08-06"}],
            "cache": {"exact": True, "max_entry_bytes": 16 * 1024 * 1024},
        },
    },
}
@pytest.fixture(scope="module", params=["ext_proc", "http"])
def big(request, tmp_path_factory, fake_openai, fake_anthropic) -> Iterator[Stack]:
    """One stack per front (the module runs under both, whatever SIDEGATE_E2E_FRONT says)."""
    yield from front_stack(request.param, tmp_path_factory.mktemp(f"large-{request.param}"), fake_openai.url,
                           fake_anthropic.url, EXTRA)  # fmt: skip


def _envoy_pid(stack: Stack) -> int:
    assert stack.sup is not None
    proc = stack.sup.child("envoy").proc
    assert proc is not None
    return proc.pid


def _assert_envoy_alive(stack: Stack, pid: int) -> None:
    assert stack.sup is not None
    proc = stack.sup.child("envoy").proc
    assert proc is not None and proc.pid == pid, "Envoy was restarted"
    assert proc.poll() is None, f"Envoy exited with {proc.returncode}"
    assert httpx.get(stack.admin_url + "/ready", timeout=5).status_code == 200


@pytest.mark.parametrize(
    "model,size",
    [
        ("gpt-4o-mini", 1_600_000),  # direct lane (same API, same model)
        ("gpt-4o-mini", 8_000_000),
        ("gpt-4o-mini", 32_000_000),  # just under the limit with its JSON around it
        ("gpt-4o", 1_600_000),  # full lane: provider-side model name
        ("gpt-4o", 8_000_000),
        ("gpt-4o", 32_000_000),
        ("claude-haiku", 1_600_000),  # full lane: OpenAI client, Anthropic provider (translated)
        ("claude-haiku", 8_000_000),
    ],
)
def test_openai_client_gets_the_whole_answer(big, fake_openai, fake_anthropic, model, size):
    pid = _envoy_pid(big)
    text = varied_text(size)
    fake = fake_anthropic if model.startswith("claude") else fake_openai
    fake.script([{"content": text}])
    raw = oai(big).chat.completions.with_raw_response.create(model=model, messages=MSG)
    r = raw.parse()
    assert raw.http_response.status_code == 200
    got = r.choices[0].message.content or ""
    assert len(got) == size and digest(got) == digest(text)
    assert r.usage is not None and r.usage.total_tokens > 0
    _assert_envoy_alive(big, pid)


@pytest.mark.parametrize("model", ["claude-direct", "claude-haiku"])
def test_anthropic_client_gets_the_whole_answer(big, fake_anthropic, model):
    """Anthropic client and provider: the direct lane, and with a provider-side model name the
    per-try stage (or the try lane)."""
    pid = _envoy_pid(big)
    text = varied_text(8_000_000)
    fake_anthropic.script([{"content": text}])
    r = ant(big).messages.create(model=model, max_tokens=50, messages=MSG)
    got = "".join(b.text for b in r.content if b.type == "text")
    assert len(got) == len(text) and digest(got) == digest(text)
    _assert_envoy_alive(big, pid)


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-4o", "claude-haiku"])
def test_answer_over_the_limit_is_a_502_in_openai_format(big, fake_openai, fake_anthropic, model):
    pid = _envoy_pid(big)
    fake = fake_anthropic if model.startswith("claude") else fake_openai
    fake.script([{"content": varied_text(LIMIT + 64 * 1024)}])
    with pytest.raises(openai.APIStatusError) as exc:
        oai(big).chat.completions.create(model=model, messages=MSG)
    assert exc.value.status_code == 502
    body = exc.value.response.json()
    assert body["error"]["type"] == "server_error" and "max_response_bytes" in body["error"]["message"]
    assert len(exc.value.response.content) < 1024
    _assert_envoy_alive(big, pid)
    # The gateway serves the next request normally.
    fake_openai.script([{"content": "ok"}])
    assert oai(big).chat.completions.create(model="gpt-4o-mini", messages=MSG).choices[0].message.content == "ok"


@pytest.mark.parametrize("model", ["claude-direct", "claude-haiku"])
def test_answer_over_the_limit_is_a_502_in_anthropic_format(big, fake_anthropic, model):
    pid = _envoy_pid(big)
    fake_anthropic.script([{"content": varied_text(LIMIT + 64 * 1024)}])
    with pytest.raises(anthropic.APIStatusError) as exc:
        ant(big).messages.create(model=model, max_tokens=50, messages=MSG)
    assert exc.value.status_code == 502
    body = exc.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == "api_error"
    assert "max_response_bytes" in body["error"]["message"]
    _assert_envoy_alive(big, pid)


def test_large_answer_fills_the_cache_and_is_served_from_it(big, fake_openai):
    pid = _envoy_pid(big)
    text = varied_text(4_000_000)
    fake_openai.script([{"content": text, "times": -1}])  # every miss before the fill lands gets it too
    q = [{"role": "user", "content": f"large cache fill {big.workdir.name}"}]
    first = oai(big).chat.completions.with_raw_response.create(model="gpt-4o-cached", messages=q)
    assert first.parse().choices[0].message.content == text
    for _ in range(50):  # fills are asynchronous
        again = oai(big).chat.completions.with_raw_response.create(model="gpt-4o-cached", messages=q)
        if again.headers.get("x-sidegate-cache", "").startswith("hit"):
            break
        time.sleep(0.1)
    assert again.headers.get("x-sidegate-cache", "").startswith("hit"), "the large answer was not cached"
    got = again.parse().choices[0].message.content or ""
    assert digest(got) == digest(text)
    _assert_envoy_alive(big, pid)


def test_large_stream_still_flows(big, fake_openai):
    """Streams are not buffered: a stream larger than a small limit still arrives event by event."""
    pid = _envoy_pid(big)
    text = varied_text(3_000_000)
    fake_openai.script([{"content": text, "chunks": 300}])
    parts = []
    with oai(big).chat.completions.create(model="gpt-4o", messages=MSG, stream=True) as stream:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
    got = "".join(parts)
    assert len(parts) > 100 and digest(got) == digest(text)
    _assert_envoy_alive(big, pid)


@pytest.mark.parametrize("size", [34_000_000, 40_000_000])
def test_chunked_request_over_the_limit_is_a_413(big, fake_openai, size):
    """The request side keeps `max_request_bytes` (32 MiB by default): a chunked body (no
    Content-Length, so no up-front 413 route) over it is refused in the client's format, not
    stalled, and reaches no provider."""
    pid = _envoy_pid(big)
    body = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"' + b"x" * size + b'"}]}'

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 1 << 16):
            yield body[i : i + (1 << 16)]

    r = httpx.post(big.base_url + "/v1/chat/completions", content=chunks(), timeout=20,
                   headers={"authorization": f"Bearer {big.keys['acme'].key}", "content-type": "application/json"})  # fmt: skip
    assert r.status_code == 413 and r.json()["error"]["type"] == "invalid_request_error"
    assert fake_openai.requests == []
    _assert_envoy_alive(big, pid)


def test_large_answer_to_a_redacted_prompt(big, fake_openai):
    """The guard redacted the prompt (placeholders to the provider, restore on the way back): the
    request leaves the direct lane for the per-try stage (or the try lane), whole answer still."""
    pid = _envoy_pid(big)
    email = "jane.doe@example.com"
    text = varied_text(8_000_000) + f" {{{email}}}"
    fake_openai.script([{"content": text}])
    msgs = [{"role": "user", "content": f"My email is {email}. Write a lot."}]
    raw = oai(big).chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=msgs)
    assert email not in fake_openai.requests[-1].json["messages"][0]["content"]
    got = raw.parse().choices[0].message.content or ""
    assert digest(got) == digest(text)
    _assert_envoy_alive(big, pid)


def test_several_large_answers_at_once(big, fake_openai):
    """Whole answers share Envoy's connections to the ext_proc service: their watermarks hold several."""
    from concurrent.futures import ThreadPoolExecutor

    pid = _envoy_pid(big)
    text = varied_text(8_000_000)
    fake_openai.script([{"content": text, "times": 4}])

    def one(_: int) -> str:
        return oai(big).chat.completions.create(model="gpt-4o", messages=MSG).choices[0].message.content or ""

    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(one, range(4)))
    assert [digest(g) for g in got] == [digest(text)] * 4
    _assert_envoy_alive(big, pid)
