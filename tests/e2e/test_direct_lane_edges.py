"""Direct-lane edge cases of the router-level Lua (lua/envoy_direct_errors.lua,
lua/envoy_stream_watch.lua), through a real Envoy: a provider answer without a body, and an
Anthropic stream whose text mentions the name of its terminal event, streams cut at every byte."""

from __future__ import annotations

import socket

import pytest
from fault_helpers import assert_well_formed_stream, body_for, post

pytestmark = pytest.mark.e2e
STACK_EXTRA = {
    "models": {"claude-direct": {"routes": [{"provider": "anthropic"}]}},
    "defaults": {"guard": None},
}


@pytest.mark.parametrize("status", [401, 200])
def test_direct_lane_answer_without_a_body_is_a_502_with_one(stack, fake_openai, status):
    """A bodyless 401 (our key refused) or 200 (not a valid answer) becomes the 502 in the client's
    format: its body is really sent (the content-length the Lua sets matches it)."""
    fake_openai.script([{"status": status, "empty": True}])
    r = post(stack, "openai", body_for("openai", "gpt-4o-mini", "hi"), timeout=5)
    assert r.status_code == 502, r.text
    assert r.json()["error"]["message"]
    assert r.headers["x-sidegate-provider"] == "openai"  # the direct lane answered


@pytest.mark.parametrize("write_size", [None, 7])
def test_direct_lane_stream_text_naming_the_terminal_event_is_relayed_whole(stack, fake_anthropic, write_size):
    """The watch looks for Anthropic's terminal event as an `event:` line: a text delta that quotes
    `event: message_stop` does not end the stream, and every byte after it reaches the client."""
    content = "the last event is event: message_stop and then the stream ends"
    fake_anthropic.script([{"content": content, "chunks": 4, "write_size": write_size}])
    r = post(stack, "anthropic", body_for("anthropic", "claude-direct", "hi", stream=True))
    assert r.status_code == 200 and r.headers["x-sidegate-provider"] == "anthropic", r.text
    payloads = assert_well_formed_stream("anthropic", r.text)
    text = "".join(p["delta"].get("text", "") for p in payloads if p["type"] == "content_block_delta")
    assert text == content, r.text
    assert payloads[-1]["type"] == "message_stop", r.text[-300:]
    assert r.text.endswith("\n\n"), r.text[-100:]


@pytest.mark.parametrize(("client", "model", "extra"), [
    pytest.param("openai", "gpt-4o-mini", {"stream_options": {"include_usage": True}}, id="oai"),
    pytest.param("anthropic", "claude-direct", {}, id="ant"),
])  # fmt: skip
def test_direct_lane_stream_in_one_byte_pieces_reaches_the_client_byte_for_byte(
    stack, fake_openai, fake_anthropic, client, model, extra
):
    """Every line of a stream cut into single bytes is relayed once, the terminal event whole
    (with its closing empty line, which the SSE parsers need to dispatch it), nothing after it."""
    fake = fake_openai if client == "openai" else fake_anthropic
    body = body_for(client, model, "hi", stream=True, **extra)
    fake.script([{"content": "alpha beta", "chunks": 2}])
    whole = post(stack, client, body).text
    fake.script([{"content": "alpha beta", "chunks": 2, "write_size": 1}])
    r = post(stack, client, body)
    assert r.status_code == 200 and r.headers["x-sidegate-provider"] == client, r.text

    def norm(text: str) -> list[str]:  # ids and timestamps differ between two streams
        return [line.split(":", 1)[0] for line in text.split("\n")]

    assert norm(r.text) == norm(whole), (r.text[-300:], whole[-300:])
    terminal = "data: [DONE]\n\n" if client == "openai" else 'data: {"type":"message_stop"}\n\n'
    assert r.text.endswith(terminal) and whole.endswith(terminal), r.text[-200:]


@pytest.mark.parametrize("head", [
    pytest.param(b"Content-Length: 999999999\r\n", id="too-large"),
    pytest.param(b"Content-Length: 100000\r\nContent-Encoding: br\r\n", id="unsupported-encoding"),
])  # fmt: skip
def test_refusing_routes_answer_before_the_body(stack, head):
    """The too-large (413) and unsupported-encoding (415) routes answer from the request's head:
    no filter reads (buffers) the body first, so the client needs not send it."""
    host, port = stack.base_url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + head + b"\r\n")
        s.settimeout(3)
        try:
            first = s.recv(200)
        except TimeoutError:
            first = b"(no answer within 3 s: the body was being read)"
    assert first.startswith((b"HTTP/1.1 413", b"HTTP/1.1 415")), first


def test_direct_lane_stream_with_a_content_length_still_gets_its_error_event(stack, fake_openai):
    """A provider stream that declares its length: the watch changes the body (an error event
    appended, a key scrubbed), so the declared length goes and the client reads to the real end."""
    body = body_for("openai", "gpt-4o-mini", "hi", stream=True, stream_options={"include_usage": True})
    fake_openai.script([{"truncate": 4}])
    cut = post(stack, "openai", body).text
    event = cut[cut.rindex("data: "):]  # the cut error event the watch appended
    assert "ended before the response was complete" in event, cut[-300:]
    length = len((cut[: -len(event)]).encode())  # what the provider sent (same length every time)
    fake_openai.script([{"truncate": 4, "headers": {"content-length": str(length)}}])
    r = post(stack, "openai", body)
    assert r.text.endswith(event), r.text[-300:]


def test_direct_lane_502_drops_the_providers_content_encoding(stack, fake_openai):
    """The 502 that replaces a provider's refusal is plain JSON: the provider's `content-encoding`
    (allowed through for its own bodies) must not describe it."""
    fake_openai.script([{"status": 401, "error": "bad key", "headers": {"content-encoding": "gzip"}}])
    r = post(stack, "openai", body_for("openai", "gpt-4o-mini", "hi"), timeout=5)
    assert r.status_code == 502 and "content-encoding" not in r.headers, r.headers
    assert r.json()["error"]["message"]
