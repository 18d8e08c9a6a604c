"""Translated streams behind the HTTP front, their first try prepared by the front (issue 25;
extproc/prepared.py): the front translates the first try's body while answering the check, and the
per-try gRPC stream's request-headers answer replaces the body (CONTINUE_AND_REPLACE), so Envoy
sends no request-body message. Proven through a real Envoy with two extproc workers: the provider
receives exactly the translated body, one ext_proc message fewer per stream, a retriable error
falls back to the next provider (re-translated for it), the fill and the quota settle once, and
requests that cannot be prepared keep the body round trip."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import orjson
import pytest
from harness import ANTHROPIC_PROVIDER_KEY, OPENAI_PROVIDER_KEY

from sidegate import config as config_mod
from sidegate.core.tries import TryStage

pytestmark = pytest.mark.e2e
MSG = [{"role": "user", "content": "Say hi"}]
EMAIL = "jane.doe@example.com"
STACK_EXTRA = {
    "services": {"auth": "inline", "front": "http", "extproc_workers": 2},
    "models": {
        "chain": {"routes": [{"provider": "openai", "model": "gpt-4o-mini", "priority": 0},
                             {"provider": "anthropic", "model": "claude-3-5-haiku-20241022", "priority": 1}]},
        "cached-claude": {"routes": [{"provider": "anthropic", "model": "claude-3-5-haiku-20241022"}],
                          "cache": {"exact": True}},
        "spread": {"routes": [{"provider": "anthropic", "model": "claude-3-5-haiku-20241022", "weight": 1, "priority": 0},
                              {"provider": "openai", "model": "gpt-4o-mini", "weight": 1, "priority": 0}]},
    },
}  # fmt: skip
SENT = "http.sidegateext_proc.upstream.stream_msgs_sent"
"""Messages Envoy sent on the per-try ext_proc streams (request headers, request body, response
headers, body chunks...)."""
STREAMS = "http.sidegateext_proc.upstream.streams_started"


def oai(stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url + "/v1", api_key=stack.keys["acme"].key, max_retries=0)


def _stat(stack, name: str) -> int:
    return stack.stat(name) or 0


def _expected_body(stack, meta: dict, cluster: str, client: dict) -> bytes:
    """What the per-try stage makes of `client` for `cluster` (the same code, offline)."""
    env = {"E2E_OPENAI_KEY": OPENAI_PROVIDER_KEY, "E2E_ANTHROPIC_KEY": ANTHROPIC_PROVIDER_KEY}
    stage = TryStage(config_mod.load(stack.cfg_path, env=env))
    body, _ = stage.start_try(meta, cluster, 1).request_body(orjson.dumps(client))
    return body


def _stream(stack, model: str, text: str = "Say hi") -> tuple[str, object]:
    raw = oai(stack).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], stream=True, stream_options={"include_usage": True})  # fmt: skip
    chunks = list(raw.parse())
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), raw


def _meta(model: str) -> dict:
    return {"api": "openai", "model": model, "stream": True, "want_usage": True, "front": "http"}


def _refused(stack, model: str) -> int:
    """A translated stream the provider refuses with a 400 (a JSON body: buffered, one message):
    the ext_proc messages Envoy sent for it, deterministic whatever the reads."""
    before = _stat(stack, SENT)
    with pytest.raises(openai.BadRequestError) as e:
        _stream(stack, model)
    assert e.value.status_code == 400 and e.value.body["type"] == "invalid_request_error"  # OpenAI format
    return _stat(stack, SENT) - before


def test_upstream_gets_the_exact_translated_body_without_the_body_round_trip(stack, fake_anthropic):
    text, raw = _stream(stack, "claude-haiku", "Tell me about Paris")
    assert text and raw.headers["x-sidegate-provider"] == "anthropic"
    (rec,) = fake_anthropic.requests
    client = {"model": "claude-haiku", "messages": [{"role": "user", "content": "Tell me about Paris"}], "stream": True,
              "stream_options": {"include_usage": True}}  # fmt: skip
    assert rec.body == _expected_body(stack, _meta("claude-haiku"), "provider.anthropic", client)
    assert rec.headers["content-length"] == str(len(rec.body)) and "transfer-encoding" not in rec.headers
    assert rec.path == "/v1/messages" and rec.headers["x-api-key"] == ANTHROPIC_PROVIDER_KEY
    assert rec.headers["anthropic-version"] and "authorization" not in rec.headers
    stack.wait_ledger(lambda r: r.model == "claude-haiku" and r.stream and r.status == 200)
    # Request headers, response headers, the (buffered error) body: no request-body message.
    fake_anthropic.script([{"status": 400, "error": "bad request"}])
    assert _refused(stack, "claude-haiku") == 3


def test_an_unpreparable_first_try_keeps_the_body_round_trip(stack, fake_openai, fake_anthropic):
    """A weighted first group (Envoy picks the provider): the body comes to the per-try stage."""
    fake_openai.script([{"status": 400, "error": "bad request"}])
    fake_anthropic.script([{"status": 400, "error": "bad request"}])
    assert _refused(stack, "spread") == 4


def test_fallback_retranslates_the_next_try(stack, fake_openai, fake_anthropic):
    """A retriable error on the prepared first try: Envoy retries the next provider, whose try
    gets the client's body and translates it (the prepared body is only the first try's)."""
    fake_openai.script([{"status": 429, "error": "slow down", "retry_after": 1}])
    fake_anthropic.script([{"usage": {"input_tokens": 21, "output_tokens": 5}, "chunks": 3}])
    text, raw = _stream(stack, "chain", "Fall back please")
    assert (
        text
        and raw.headers["x-sidegate-provider"] == "anthropic"
        and raw.headers["x-sidegate-attempts"] == "2"
    )
    client = {"model": "chain", "messages": [{"role": "user", "content": "Fall back please"}], "stream": True,
              "stream_options": {"include_usage": True}}  # fmt: skip
    (first,) = fake_openai.requests
    (second,) = fake_anthropic.requests
    # (a same-API passthrough keeps the client's key order, which the SDK chose: compared parsed)
    assert first.json == json.loads(_expected_body(stack, _meta("chain"), "provider.openai", client))
    assert first.headers["content-length"] == str(len(first.body))
    assert (
        first.json["model"] == "gpt-4o-mini"
        and first.headers["authorization"] == f"Bearer {OPENAI_PROVIDER_KEY}"
    )
    assert second.body == _expected_body(stack, {**_meta("chain"), "start": 0}, "provider.anthropic", client)
    assert (
        second.json["model"] == "claude-3-5-haiku-20241022"
        and second.headers["x-api-key"] == ANTHROPIC_PROVIDER_KEY
    )
    assert second.headers["content-length"] == str(len(second.body)) and "authorization" not in second.headers
    rec = stack.wait_ledger(lambda r: r.model == "chain" and r.status == 200)
    assert (rec.input_tokens, rec.output_tokens) == (21, 5) and rec.provider == "anthropic" and rec.stream
    time.sleep(0.6)
    assert len([r for r in stack.ledger() if r.model == "chain"]) == 1  # settled once


def test_two_workers_each_stream_prepared_wherever_it_lands(stack, fake_anthropic):
    """Checks and per-try streams spread over both workers (any worker may serve a stream another
    prepared): every provider body is its own prompt's translation, no body message is sent."""
    client = oai(stack)

    def one(i: int) -> str:
        stream = client.chat.completions.create(model="claude-haiku", messages=[{"role": "user", "content": f"question {i}"}],
                                                stream=True, stream_options={"include_usage": True})  # fmt: skip
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(one, range(18)))
    assert all(a.startswith("Echo") and f"question {i}" in a for i, a in enumerate(answers)), answers
    assert len(fake_anthropic.requests) == 18
    for rec in fake_anthropic.requests:
        prompt = rec.json["messages"][0]["content"]
        body = {"model": "claude-haiku", "messages": [{"role": "user", "content": prompt}], "stream": True,
                "stream_options": {"include_usage": True}}  # fmt: skip
        assert rec.body == _expected_body(stack, _meta("claude-haiku"), "provider.anthropic", body)
    fake_anthropic.script([{"status": 400, "error": "bad request", "times": 12}])
    before = _stat(stack, SENT)
    with ThreadPoolExecutor(6) as pool:
        codes = list(pool.map(lambda _: _refused_code(client), range(12)))
    assert codes == [400] * 12 and _stat(stack, SENT) - before == 3 * 12


def _refused_code(client: openai.OpenAI) -> int:
    try:
        list(client.chat.completions.create(model="claude-haiku", messages=MSG, stream=True))
    except openai.BadRequestError as e:
        return e.status_code
    return 200


def test_fill_across_workers_then_hit(stack, fake_anthropic):
    """A cache fill of a prepared stream: the try's worker gets the client's body from the
    metadata (the check's worker holds the pending fill). Several prompts, so that both workers
    serve some tries."""
    for i in range(4):
        prompt = f"Capital of country {'ABCD'[i]}?"
        first, _ = _stream(stack, "cached-claude", prompt)
        deadline, hit = time.monotonic() + 5, None
        while time.monotonic() < deadline:  # the fill lands just after the stream
            text, raw = _stream(stack, "cached-claude", prompt)
            if raw.headers.get("x-sidegate-cache") == "hit-exact":
                hit = text
                break
            time.sleep(0.1)
        assert hit == first
    assert len(fake_anthropic.requests) == 4


def test_pii_redacted_stream_keeps_the_per_try_redaction(stack, fake_anthropic):
    text, _ = _stream(stack, "claude-haiku", f"Mail {EMAIL} now")
    (rec,) = fake_anthropic.requests  # the fake echoes the prompt
    assert EMAIL not in rec.body.decode() and "<EMAIL_1>" in rec.body.decode()
    assert EMAIL in text  # restored in the client's stream


@pytest.fixture(scope="module")
def grpc_stack(tmp_path_factory, fake_openai, fake_anthropic):
    """The same models behind the gRPC front (ext_authz + the gateway ext_proc): the gateway
    prepares the first try the same way, in its own metadata namespace."""
    from harness import front_stack

    extra = {k: v for k, v in STACK_EXTRA.items() if k != "services"}
    extra["services"] = {"extproc_workers": 2}
    yield from front_stack(
        "ext_proc", tmp_path_factory.mktemp("grpc"), fake_openai.url, fake_anthropic.url, extra
    )


def test_grpc_front_prepares_too(grpc_stack, fake_openai, fake_anthropic):
    stack = grpc_stack
    text, raw = _stream(stack, "claude-haiku", "Tell me about Rome")
    assert text and raw.headers["x-sidegate-provider"] == "anthropic"
    (rec,) = fake_anthropic.requests
    client = {"model": "claude-haiku", "messages": [{"role": "user", "content": "Tell me about Rome"}], "stream": True,
              "stream_options": {"include_usage": True}}  # fmt: skip
    meta = {k: v for k, v in _meta("claude-haiku").items() if k != "front"}
    assert rec.body == _expected_body(stack, meta, "provider.anthropic", client)
    assert (
        rec.headers["content-length"] == str(len(rec.body))
        and rec.headers["x-api-key"] == ANTHROPIC_PROVIDER_KEY
    )
    fake_anthropic.script([{"status": 400, "error": "bad request"}])
    assert _refused(stack, "claude-haiku") == 3
    # A retriable error on the prepared try: the next provider's try is translated from the client's body.
    fake_anthropic.reset()
    fake_openai.script([{"status": 429, "error": "slow down", "retry_after": 1}])
    text, raw = _stream(stack, "chain", "Fall back please")
    assert (
        text
        and raw.headers["x-sidegate-provider"] == "anthropic"
        and raw.headers["x-sidegate-attempts"] == "2"
    )
    (second,) = fake_anthropic.requests
    assert (
        second.json["model"] == "claude-3-5-haiku-20241022"
        and second.json["messages"][0]["content"] == "Fall back please"
    )
    assert second.headers["content-length"] == str(len(second.body)) and "authorization" not in second.headers
    stack.wait_ledger(lambda r: r.model == "chain" and r.status == 200 and r.provider == "anthropic")
