"""A fast fake upstream for the benchmarks: a second Envoy answering with `direct_response`.

The Python fakes (sidegate.fakes) are faithful but slower than the gateway under test, so for
throughput numbers the provider is an Envoy that returns a fixed OpenAI chat.completion (or
Anthropic message) at tens of thousands of requests per second on one core.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

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


def bootstrap(port: int, admin_port: int) -> dict:
    def route(prefix: str, body: str) -> dict:
        return {
            "match": {"prefix": prefix},
            "direct_response": {"status": 200, "body": {"inline_string": body}},
            "response_headers_to_add": [{"header": {"key": "content-type", "value": "application/json"}}],
        }

    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "fake",
        "route_config": {"virtual_hosts": [{"name": "fake", "domains": ["*"], "routes": [
            route("/v1/messages", ANTHROPIC_BODY), route("/", OPENAI_BODY)]}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
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
