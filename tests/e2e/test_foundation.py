"""Issue 2: the walking skeleton, end to end through a real Envoy with the official SDKs."""

from __future__ import annotations

import threading
import time

import anthropic
import httpx
import openai
import pytest
from harness import ANTHROPIC_PROVIDER_KEY, OPENAI_PROVIDER_KEY

pytestmark = pytest.mark.e2e
STACK_EXTRA = {"listener": {"max_request_bytes": 64 * 1024}}
MSG = [{"role": "user", "content": "What is the capital of France?"}]


def oai(stack, key: str = "acme", **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url + "/v1", api_key=stack.keys[key].key, max_retries=0, timeout=20, **kw)


def _assert_provider_saw_only_provider_key(stack, rec, provider_key: str, header: str) -> None:
    client_keys = [k.key for k in stack.keys.values()]
    assert provider_key in rec.headers.get(header, "")
    blob = repr(rec.headers) + rec.body.decode(errors="replace")
    for k in client_keys:
        assert k not in blob
    assert not any(h.startswith("x-sidegate") for h in rec.headers)


def test_non_streaming_completion_routed_with_provider_key(stack, fake_openai):
    r = oai(stack).chat.completions.create(model="gpt-4o-mini", messages=MSG)
    assert r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"
    assert r.usage and r.usage.total_tokens > 0
    (rec,) = fake_openai.requests
    assert rec.path == "/v1/chat/completions"
    assert rec.json["model"] == "gpt-4o-mini"
    _assert_provider_saw_only_provider_key(stack, rec, f"Bearer {OPENAI_PROVIDER_KEY}", "authorization")


def test_streaming_completion(stack, fake_openai):
    chunks = list(oai(stack).chat.completions.create(model="gpt-4o-mini", messages=MSG, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks)
    # Usage was requested upstream for metering but the client did not ask: no usage-only chunk.
    assert all(c.choices for c in chunks)
    (rec,) = fake_openai.requests
    assert rec.json["stream"] is True and rec.json["stream_options"] == {"include_usage": True}


def test_streaming_with_client_usage(stack):
    chunks = list(oai(stack).chat.completions.create(
        model="gpt-4o-mini", messages=MSG, stream=True, stream_options={"include_usage": True}))  # fmt: skip
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_model_alias_reaches_provider(stack, fake_openai):
    oai(stack).chat.completions.create(model="gpt-4o", messages=MSG)
    assert fake_openai.requests[-1].json["model"] == "gpt-4o-2024-08-06"


def test_wrong_revoked_and_missing_key_get_401(stack, fake_openai):
    bad = openai.OpenAI(base_url=stack.base_url + "/v1", api_key="sgk_aaaaaaaa_" + "x" * 40, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as exc:
        bad.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    assert exc.value.status_code == 401 and exc.value.body["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        oai(stack, "acme-revoked").chat.completions.create(model="gpt-4o-mini", messages=MSG)
    r = httpx.post(stack.base_url + "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": MSG})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert r.headers["content-type"] == "application/json"
    assert fake_openai.requests == []


def test_unknown_model_400(stack, fake_openai):
    with pytest.raises(openai.BadRequestError) as exc:
        oai(stack).chat.completions.create(model="gpt-9-ultra", messages=MSG)
    assert exc.value.status_code == 400 and exc.value.body["code"] == "model_not_found"
    assert fake_openai.requests == []


def test_key_model_allow_list_403(stack):
    with pytest.raises(openai.PermissionDeniedError):
        oai(stack, "acme-limited").chat.completions.create(model="gpt-4o", messages=MSG)
    assert oai(stack, "acme-limited").chat.completions.create(model="gpt-4o-mini", messages=MSG).choices


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "\xff\xfe"}]}', "UTF-8"),
        (b"[]", "JSON object"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": "gpt-4o-mini", "messages": "hi"}', "messages"),
        (b'{"model": "gpt-4o-mini", "messages": [], "stream": false}', "messages"),
        (b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "stream"),
        (b"", "empty"),
    ],
)
def test_bad_input_400_in_openai_format(stack, fake_openai, body, needle):
    r = httpx.post(stack.base_url + "/v1/chat/completions", content=body,
                   headers={"authorization": f"Bearer {stack.keys['acme'].key}", "content-type": "application/json"})  # fmt: skip
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and needle.lower() in err["message"].lower()
    assert fake_openai.requests == []


def test_bad_input_400_in_anthropic_format(stack):
    r = httpx.post(stack.base_url + "/v1/messages", content=b"{oops",
                   headers={"x-api-key": stack.keys["acme"].key, "content-type": "application/json"})  # fmt: skip
    assert r.status_code == 400
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "invalid_request_error"


def test_oversized_body_413_in_api_format(stack, fake_openai):
    big = "x" * (80 * 1024)
    r = httpx.post(stack.base_url + "/v1/chat/completions",
                   json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": big}]},
                   headers={"authorization": f"Bearer {stack.keys['acme'].key}"})  # fmt: skip
    assert r.status_code == 413
    assert r.json()["error"]["message"]
    r = httpx.post(stack.base_url + "/v1/messages",
                   json={"model": "claude-haiku", "max_tokens": 5, "messages": [{"role": "user", "content": big}]},
                   headers={"x-api-key": stack.keys["acme"].key})  # fmt: skip
    assert r.status_code == 413 and r.json()["error"]["type"] == "request_too_large"
    # Beyond Envoy's own buffer (listener.max_request_bytes also sizes it): Envoy's local 413,
    # rewritten into the API's format by the bootstrap's local_reply_config.
    huge = "x" * (3 * 1024 * 1024)
    r = httpx.post(stack.base_url + "/v1/chat/completions",
                   json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": huge}]},
                   headers={"authorization": f"Bearer {stack.keys['acme'].key}"})  # fmt: skip
    assert r.status_code == 413 and r.json()["error"]["message"]
    assert fake_openai.requests == []


def test_unknown_path_and_method(stack):
    h = {"authorization": f"Bearer {stack.keys['acme'].key}"}
    r = httpx.post(stack.base_url + "/v1/completions", json={}, headers=h)
    assert r.status_code == 404 and "error" in r.json()
    r = httpx.get(stack.base_url + "/v1/chat/completions", headers=h)
    assert r.status_code == 405 and "POST" in r.json()["error"]["message"]


def test_client_cannot_pick_the_route_header(stack, fake_openai):
    r = httpx.post(stack.base_url + "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": MSG},
                   headers={"authorization": f"Bearer {stack.keys['acme-limited'].key}", "x-sidegate-route": "gpt-4o"})  # fmt: skip
    assert r.status_code == 200
    assert fake_openai.requests[-1].json["model"] == "gpt-4o-mini"


def test_anthropic_sdk_passthrough(stack, fake_anthropic):
    c = anthropic.Anthropic(base_url=stack.base_url, api_key=stack.keys["acme"].key, max_retries=0)
    m = c.messages.create(model="claude-haiku", max_tokens=64, messages=MSG)
    assert m.content[0].text and m.stop_reason == "end_turn"
    with c.messages.stream(model="claude-haiku", max_tokens=64, messages=MSG) as s:
        final = s.get_final_message()
    assert final.content[0].text and final.usage.output_tokens > 0
    rec = fake_anthropic.requests[-1]
    assert rec.path == "/v1/messages" and rec.json["model"] == "claude-3-5-haiku-20241022"
    _assert_provider_saw_only_provider_key(stack, rec, ANTHROPIC_PROVIDER_KEY, "x-api-key")
    assert "authorization" not in rec.headers


def test_sse_is_not_buffered(stack, fake_openai):
    """The first chunk reaches the client while the provider is still streaming."""
    fake_openai.script([{"chunks": 6, "chunk_delay_s": 0.4}])
    start = time.monotonic()
    stream = oai(stack).chat.completions.create(model="gpt-4o-mini", messages=MSG, stream=True)
    first_at = None
    for chunk in stream:
        if first_at is None and chunk.choices and chunk.choices[0].delta.content:
            first_at = time.monotonic() - start
    total = time.monotonic() - start
    assert first_at is not None and total >= 2.0
    assert first_at < 1.0 < total - 1.0, (first_at, total)


def test_concurrent_requests_do_not_mix(stack, fake_openai):
    results: dict[int, str] = {}

    def one(i: int) -> None:
        r = oai(stack).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"number {i}"}])
        results[i] = r.choices[0].message.content or ""

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 20
    for i, text in results.items():
        assert f"number {i}" in text
