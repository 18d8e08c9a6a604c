"""Translated streams behind the HTTP front, their first try prepared by the front (issue 25;
extproc/prepared.py): the front translates the first try's body while answering the check, and the
per-try gRPC stream's request-headers answer replaces the body (CONTINUE_AND_REPLACE), so Envoy
sends no request-body message. Proven through a real Envoy with two extproc workers: the provider
receives exactly the translated body, one ext_proc message fewer per stream, a retriable error
falls back to the next provider (re-translated for it), the fill and the quota settle once, and
requests that cannot be prepared keep the body round trip."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import openai
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
        "spread": {"routes": [{"provider": "anthropic", "model": "claude-3-5-haiku-20241022", "weight": 1},
                              {"provider": "openai", "model": "gpt-4o-mini", "weight": 1}]},
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
    import orjson

    env = {"E2E_OPENAI_KEY": OPENAI_PROVIDER_KEY, "E2E_ANTHROPIC_KEY": ANTHROPIC_PROVIDER_KEY}
    stage = TryStage(config_mod.load(stack.cfg_path, env=env))
    body, _ = stage.start_try(meta, cluster, 1).request_body(orjson.dumps(client))
    return body


def _stream(stack, model: str, text: str = "Say hi") -> tuple[str, object]:
    raw = oai(stack).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], stream=True, stream_options={"include_usage": True})  # fmt: skip
    chunks = list(raw.parse())
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), raw


def test_stats_probe(stack, fake_anthropic):
    import httpx

    _stream(stack, "claude-haiku")
    print(httpx.get(f"{stack.admin_url}/stats", params={"filter": "ext_proc"}, timeout=5).text)
    r = fake_anthropic.requests[0]
    print(r.headers, r.body)
    assert 0
