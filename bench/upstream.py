"""A fast fake upstream for the benchmarks: a second Envoy answering with `direct_response`.

The Python fakes (sidegate.fakes) are faithful but slower than the gateway under test, so for
throughput numbers the provider is an Envoy that returns a fixed OpenAI chat.completion (or
Anthropic message, or Responses `response`) at tens of thousands of requests per second on one core. A request with the
header `x-bench-stream` gets the same answer as a stream instead (SSE, the usage in its events, as
with OpenAI's `stream_options.include_usage` and always with Anthropic), sent at once: the client's
time to the first event is then the path's own cost (the time-to-first-token overhead). With
`x-bench-events` too, the stream is LONG_EVENTS content events, all sent at once (a burst: one
read for Envoy, where the gateway's per-event work would delay the first event).
"""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import yaml

from sidegate.fakes import wire_anthropic, wire_openai, wire_responses
from sidegate.fakes.answer import Answer

OPENAI_BODY = (
    '{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini",'
    '"choices":[{"index":0,"message":{"role":"assistant","content":"Paris is the capital of France.",'
    '"refusal":null},"logprobs":null,"finish_reason":"stop"}],'
    '"usage":{"prompt_tokens":14,"completion_tokens":7,"total_tokens":21}}'
)
ANTHROPIC_BODY = (
    '{"id":"msg_bench","type":"message","role":"assistant","model":"claude-3-5-haiku-20241022",'
    '"content":[{"type":"text","text":"Paris is the capital of France."}],"stop_reason":"end_turn",'
    '"stop_sequence":null,"usage":{"input_tokens":14,"output_tokens":7}}'
)


# The same answer as a stream, in each provider's wire format (the fakes' own encoders).
_ANSWER = Answer(model="gpt-4o-mini", text="Paris is the capital of France.", tool_calls=[], finish_reason="stop",
                 prompt_tokens=14, completion_tokens=7, chunks=6)  # fmt: skip
OPENAI_SSE = b"".join(wire_openai.stream_events(_ANSWER, include_usage=True)).decode()
_RESPONSES_REQUEST = {"model": "gpt-4o-mini", "input": "What is the capital of France?"}
RESPONSES_BODY = wire_responses.response_body(_ANSWER, _RESPONSES_REQUEST, "resp_bench").decode()
RESPONSES_SSE = b"".join(wire_responses.stream_events(_ANSWER, _RESPONSES_REQUEST, "resp_bench")).decode()
ANTHROPIC_SSE = b"".join(wire_anthropic.stream_events(replace(_ANSWER, model="claude-3-5-haiku-20241022"))).decode()
STREAM_HEADER = "x-bench-stream"
LONG_HEADER = "x-bench-events"
LONG_EVENTS = 500
"""Content events of the long stream (`LONG_HEADER`): the issue's 500-event burst."""
_LONG = replace(_ANSWER, text=" ".join(f"w{i}" for i in range(LONG_EVENTS)), completion_tokens=LONG_EVENTS, chunks=LONG_EVENTS)
OPENAI_LONG_SSE = b"".join(wire_openai.stream_events(_LONG, include_usage=True)).decode()
ANTHROPIC_LONG_SSE = b"".join(wire_anthropic.stream_events(replace(_LONG, model="claude-3-5-haiku-20241022"))).decode()


def bootstrap(port: int, admin_port: int) -> dict:
    def route(prefix: str, body: str, stream: bool = False, long: bool = False) -> dict:
        ctype = "text/event-stream" if stream else "application/json"
        present = [{"name": h, "present_match": True} for h in (STREAM_HEADER, LONG_HEADER)[: (2 if long else 1) if stream else 0]]
        return {
            "match": {"prefix": prefix, **({"headers": present} if present else {})},
            "direct_response": {"status": 200, "body": {"inline_string": body}},
            "response_headers_to_add": [{"header": {"key": "content-type", "value": ctype}}],
        }

    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "fake",
        # A Responses stream (every event repeats the response object) is over the 4 KiB default.
        "route_config": {"max_direct_response_body_size_bytes": 1 << 20, "virtual_hosts": [{"name": "fake", "domains": ["*"], "routes": [
            route("/v1/messages", ANTHROPIC_LONG_SSE, stream=True, long=True), route("/", OPENAI_LONG_SSE, stream=True, long=True),
            route("/v1/messages", ANTHROPIC_SSE, stream=True), route("/v1/responses", RESPONSES_SSE, stream=True),
            route("/", OPENAI_SSE, stream=True),
            route("/v1/messages", ANTHROPIC_BODY), route("/v1/responses", RESPONSES_BODY), route("/", OPENAI_BODY)]}]},
        # The whole request is read before the answer: Envoy closes an HTTP/1.1 connection whose
        # request was answered before its body arrived, and a real provider keeps it alive.
        "http_filters": [
            {"name": "envoy.filters.http.buffer", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer", "max_request_bytes": 16 << 20}},
            {"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }  # fmt: skip
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": "fake",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}],
            }]
        },
    }  # fmt: skip


def start(envoy: str, workdir: Path, port: int, admin_port: int) -> subprocess.Popen[bytes]:
    f = workdir / "fake-upstream.yaml"
    f.write_text(yaml.safe_dump(bootstrap(port, admin_port)))
    return subprocess.Popen(
        [envoy, "-c", str(f), "--use-dynamic-base-id", "-l", "error", "--concurrency", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
