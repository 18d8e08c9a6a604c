"""Fault matrix, client rows: aborts mid-stream, slow bodies, oversized chunked bodies, huge message
arrays, wrong types and broken encodings (malformed JSON and invalid UTF-8 on the OpenAI endpoint are
in test_foundation.py)."""

from __future__ import annotations

import socket
import time

import orjson
import pytest
from fault_helpers import (
    ant,
    auth_headers,
    body_for,
    error_message,
    ledger,
    post,
    raw_post,
    tenant_usage,
    wait_until,
)

pytestmark = pytest.mark.e2e
LIMIT = 512 * 1024  # below Envoy's 1 MiB buffer (see test_faults_concurrency.py for bodies above it)
STACK_EXTRA = {"listener": {"max_request_bytes": LIMIT, "request_timeout_s": 3}, "defaults": {"guard": None}}
MAX_TOKENS = 2000


def test_client_abort_mid_stream_settles_the_reservation(stack, fake_anthropic):
    """The Anthropic SDK client leaves after 3 events: the provider stream is cancelled, and the
    reservation (prompt + 2000 output tokens) is replaced by what was really streamed."""
    fake_anthropic.script([{"chunks": 30, "chunk_delay_s": 0.15}])
    before = tenant_usage(stack, "globex")["tokens"]
    body = body_for("anthropic", "claude-haiku", "Tell me a long story", max_tokens=MAX_TOKENS)
    reserved = 0
    with ant(stack, "globex").messages.stream(**body) as s:
        for i, _ in enumerate(s):
            if i == 2:
                reserved = tenant_usage(stack, "globex")["tokens"] - before
            if i >= 3:
                break  # leaving the block closes the connection
    assert reserved >= MAX_TOKENS
    used = wait_until(lambda: (lambda u: u if before < u < before + MAX_TOKENS else 0)(
        tenant_usage(stack, "globex")["tokens"]), 5)  # fmt: skip
    assert used and used - before < 100, (before, used, tenant_usage(stack, "globex"))
    assert wait_until(lambda: fake_anthropic.in_flight == 0, 5), "the provider stream was never cancelled"
    recs = wait_until(lambda: [r for r in ledger(stack) if r.tenant == "globex" and r.aborted], 5)
    assert recs and recs[-1].model == "claude-haiku"


def _slow_body(stack, body: bytes, per_byte_s: float, max_s: float) -> tuple[bytes, float]:
    """Send headers at once, then the body one byte per `per_byte_s`; return what came back and when."""
    h = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer {stack.keys['acme'].key}\r\n"
         f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n").encode()  # fmt: skip
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", stack.sup.cfg.listener.port), timeout=2) as sock:
        sock.sendall(h)
        sock.settimeout(per_byte_s)
        for b in body:
            if time.monotonic() - start > max_s:
                break
            try:
                sock.sendall(bytes([b]))
                data = sock.recv(4096)
                return data, time.monotonic() - start
            except TimeoutError:
                continue
            except OSError:
                return b"", time.monotonic() - start  # closed on us: also an answer
    return b"", time.monotonic() - start


def test_slowloris_body_is_cut_off(stack):
    body = orjson.dumps(body_for("openai", "gpt-4o-mini", "x" * 200))
    data, took = _slow_body(stack, body, per_byte_s=1.0, max_s=6.0)
    assert data.startswith(b"HTTP/1.1 408") or data.startswith(b"HTTP/1.1 4"), (data[:80], took)


@pytest.mark.parametrize("api", ["openai", "anthropic"])
@pytest.mark.parametrize("size", [LIMIT + 100 * 1024, 16 * LIMIT], ids=["just-over", "far-over"])
def test_chunked_oversized_body_413_in_api_format(stack, fake_openai, fake_anthropic, api, size):
    """No content-length (chunked upload), so the up-front size route cannot refuse it: the body is
    sent after the headers were processed, and the client reads any early answer while writing."""
    body = orjson.dumps(body_for(api, "gpt-4o-mini", "x" * size))
    path = "/v1/chat/completions" if api == "openai" else "/v1/messages"
    start = time.monotonic()
    status, _, text = raw_post(stack, path, {"content-type": "application/json", **auth_headers(stack, api)},
                               body, chunked=True)  # fmt: skip
    assert status == 413, (status, text[:200])
    assert time.monotonic() - start < 5
    doc = orjson.loads(text)
    assert (doc["type"] == "error") if api == "anthropic" else ("error" in doc and "type" not in doc)
    assert fake_openai.requests == [] and fake_anthropic.requests == []


def _messages(n: int) -> list[dict[str, str]]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": "m"} for i in range(n - 1)] + [
        {"role": "user", "content": "last question"}
    ]


@pytest.mark.parametrize(("api", "model"), [("openai", "gpt-4o-mini"), ("anthropic", "claude-haiku"),
                                            ("openai", "claude-haiku")])  # fmt: skip
def test_huge_message_array_within_the_size_limit(stack, fake_openai, fake_anthropic, api, model):
    """15,000 messages (~470 KB, under the 512 KiB limit): parsed, counted, guarded, translated and
    served within a bounded time; the gateway stays responsive. (50,000 messages need ~1.5 MB: see
    test_faults_concurrency.py::test_body_over_1mib_within_the_limit_is_served.)"""
    body = {**body_for(api, model), "messages": _messages(15_000)}
    start = time.monotonic()
    r = post(stack, api, body, timeout=20)
    assert r.status_code == 200, r.text[:300]
    assert time.monotonic() - start < 5
    assert "last question" in r.text
    assert post(stack, api, body_for(api, model)).status_code == 200


WRONG_TYPES = [
    pytest.param({"messages": [{"role": "user", "content": 123}]}, "content", id="content-int"),
    pytest.param({"messages": [{"role": 5, "content": "x"}]}, "role", id="role-int"),
    pytest.param({"max_tokens": "ten"}, "max", id="max_tokens-str"),
    pytest.param({"temperature": "hot"}, "temperature", id="temperature-str"),
    pytest.param({"tools": "x"}, "tools", id="tools-str"),
    pytest.param({"stop": 5}, "stop", id="stop-int"),
]


@pytest.mark.parametrize(("api", "model"), [("openai", "claude-haiku"), ("anthropic", "gpt-4o-mini")])
@pytest.mark.parametrize(("patch", "needle"), WRONG_TYPES)
def test_wrong_types_on_translated_routes_are_a_clear_400(stack, fake_openai, fake_anthropic, api, model, patch, needle):
    r = post(stack, api, {**body_for(api, model), **patch})
    assert r.status_code == 400, r.text[:300]
    assert needle in error_message(api, r).lower()
    assert fake_openai.requests == [] and fake_anthropic.requests == []


@pytest.mark.parametrize(("api", "model"), [("openai", "gpt-4o-mini"), ("anthropic", "claude-haiku")])
@pytest.mark.parametrize(("patch", "needle"), WRONG_TYPES)
def test_wrong_types_on_same_api_routes_never_5xx(stack, api, model, patch, needle):
    """Same-API routes pass the body through: the provider is the validator; the gateway must not break."""
    r = post(stack, api, {**body_for(api, model), **patch})
    assert r.status_code < 500, r.text[:300]
    if r.status_code >= 400:
        assert error_message(api, r)


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b'{"model":"claude-haiku","max_tokens":5,"messages":[{"role":"user","content":"\xff\xfe"}]}', "utf-8"),
        (b'{"model":"claude-haiku","max_tokens":5,"messages":[{"role":"user","content":"\\ud800"}]}', "surrogate"),
        (b'{"model":"claude-haiku","max_tokens":5,"messages":[{"role":"user","content":"abc', "json"),
        (b"\xef\xbb\xbf" + b'{"model":"claude-haiku","max_tokens":5,"messages":[]}', "byte order mark"),
    ],
    ids=["invalid-utf8", "lone-surrogate", "truncated", "bom"],
)
def test_broken_encoding_on_messages_endpoint_400(stack, fake_anthropic, raw, needle):
    r = post(stack, "anthropic", raw)
    assert r.status_code == 400, r.text[:300]
    assert needle in error_message("anthropic", r).lower()
    assert fake_anthropic.requests == []
