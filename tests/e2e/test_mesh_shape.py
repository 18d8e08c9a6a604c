"""The mesh snippets' shape (k8s/mesh/, deploy/render_all.py MESH_SERVICES) end to end: the gRPC
ext_proc front with inline auth and no direct lane, so every request goes gateway stream -> per-try
upstream stream and no authz process runs. Proven through a real Envoy with the official SDKs:
same-schema and translated answers, a translated stream, and refusals in each API's format."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from harness import ANTHROPIC_PROVIDER_KEY, OPENAI_PROVIDER_KEY

pytestmark = pytest.mark.e2e
MSG = [{"role": "user", "content": "hi"}]


def _mesh_services() -> dict[str, Any]:
    """The services' shape the committed snippets are rendered for (deploy/ is not a package)."""
    path = Path(__file__).resolve().parents[2] / "deploy" / "render_all.py"
    spec = importlib.util.spec_from_file_location("deploy_render_all_mesh", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return dict(mod.MESH_SERVICES)


MESH = _mesh_services()
STACK_EXTRA = {"services": MESH}
GATEWAY_STREAMS = "http.sidegate.ext_proc.gateway.streams_started"  # (upstream filters: no dot)
UPSTREAM_STREAMS = "http.sidegateext_proc.upstream.streams_started"


def test_the_stack_runs_the_mesh_shape_without_an_authz_process(stack):
    assert MESH == {"auth": "inline", "front": "ext_proc", "direct_lane": False}
    assert stack.sup is not None and not any(c.name.startswith("authz") for c in stack.sup.children)
    dump = repr(stack.envoy_config("dynamic_listeners"))
    # (the namespace still names forwarded metadata: only the filter is gone)
    assert "'name': 'sidegate.gateway'" in dump and "'name': 'envoy.filters.http.ext_authz'" not in dump


def test_same_schema_and_translated_answers_go_through_both_streams(stack, fake_openai, fake_anthropic):
    gw, up = stack.stat(GATEWAY_STREAMS) or 0, stack.stat(UPSTREAM_STREAMS) or 0
    client = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=stack.keys["acme"].key, max_retries=0)
    assert client.chat.completions.create(model="gpt-4o-mini", messages=MSG).choices[0].message.content
    assert fake_openai.requests[-1].headers["authorization"] == f"Bearer {OPENAI_PROVIDER_KEY}"
    translated = client.chat.completions.create(model="claude-haiku", messages=MSG)
    assert translated.object == "chat.completion" and translated.choices[0].message.content
    rec = fake_anthropic.requests[-1]
    assert rec.headers["x-api-key"] == ANTHROPIC_PROVIDER_KEY and stack.keys["acme"].key not in repr(
        rec.headers
    )
    # no direct lane: each request opened one gateway stream and one per-try upstream stream
    assert (stack.stat(GATEWAY_STREAMS) or 0) - gw == 2 and (stack.stat(UPSTREAM_STREAMS) or 0) - up == 2


def test_translated_stream(stack, fake_anthropic):
    client = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=stack.keys["acme"].key, max_retries=0)
    chunks = list(client.chat.completions.create(model="claude-haiku", messages=MSG, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert fake_anthropic.requests[-1].json["stream"] is True


def test_refusals_in_each_apis_format(stack):
    bad = "sgk_aaaaaaaa_" + "x" * 40
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=stack.base_url + "/v1", api_key=bad, max_retries=0).chat.completions.create(
            model="gpt-4o-mini", messages=MSG)  # fmt: skip
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=stack.base_url, api_key=bad, max_retries=0).messages.create(
            model="claude-haiku", max_tokens=5, messages=MSG)  # fmt: skip
    r = httpx.post(stack.base_url + "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": MSG},
                   headers={"authorization": "Bearer " + stack.keys["acme-limited"].key.replace("_", "-")})  # fmt: skip
    assert r.status_code == 401 and r.json()["error"]["type"]
    with pytest.raises(openai.PermissionDeniedError):
        openai.OpenAI(base_url=stack.base_url + "/v1", api_key=stack.keys["acme-limited"].key,
                      max_retries=0).chat.completions.create(model="gpt-4o", messages=MSG)  # fmt: skip
