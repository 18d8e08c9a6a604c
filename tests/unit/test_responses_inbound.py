"""POST /v1/responses through the pipeline: parse, the provider flag, the lanes, the token estimate
and the direct lane's usage (the translators have their own tests)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from extproc.direct import usage_of
from sidegate import config, lanes
from sidegate.core.context import RequestContext
from sidegate.core.tries import ProviderTry, TryStage
from sidegate.errors import Api, GatewayError
from sidegate.features.lane import LaneFeature
from sidegate.features.parse import ParseFeature
from sidegate.features.quota import TokenCounter
from sidegate.features.quota.tokens import PER_MESSAGE, REPLY_PRIMING, cl100k


def parse(body: Any, api: Api = Api.RESPONSES) -> RequestContext:
    path = "/v1/responses" if api is Api.RESPONSES else "/v1/chat/completions"
    ctx = RequestContext(path=path, method="POST", headers={}, api=api, raw_body=orjson.dumps(body))
    asyncio.run(ParseFeature().on_request(ctx))
    return ctx


def refused(body: Any, api: Api = Api.RESPONSES) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        parse(body, api)
    assert info.value.status == 400
    return info.value


def test_parse_takes_string_and_item_inputs():
    ctx = parse({"model": "m", "input": "hi"})
    assert ctx.model == "m" and ctx.body["input"] == "hi" and not ctx.stream and not ctx.client_wants_usage
    items = [
        {"role": "user", "content": "hi"},
        {"type": "function_call_output", "call_id": "c", "output": "1"},
    ]
    ctx = parse({"model": "m", "input": items, "instructions": "be brief", "stream": True})
    assert ctx.stream and ctx.client_wants_usage  # response.completed always carries the usage


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi"}, "model"),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": ""}, "input"),
        ({"model": "m", "input": []}, "input"),
        ({"model": "m", "input": ["hi"]}, "input"),
        ({"model": "m", "input": 3}, "input"),
        ({"model": "m", "input": "hi", "instructions": ["x"]}, "instructions"),
        ({"model": "m", "input": "hi", "stream": "yes"}, "stream"),
        # a chat body on the Responses path is no Responses request
        ({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, "input"),
    ],
)
def test_parse_refuses_bad_responses_bodies_naming_the_param(body: dict[str, Any], param: str):
    assert refused(body).param == param


def test_chat_bodies_keep_their_own_rules():
    assert refused({"model": "m", "input": "hi"}, Api.OPENAI).param == "messages"
    assert parse({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, Api.OPENAI).model == "m"


PROVIDERS = {
    "openai": {"api": "openai", "base_url": "https://api.openai.com", "api_key_env": "OPENAI_API_KEY"},
    "vllm": {
        "api": "openai",
        "base_url": "http://10.0.0.2:8000",
        "api_key_env": "VLLM_KEY",
        "responses": False,
    },
    "anthropic": {
        "api": "anthropic",
        "base_url": "https://api.anthropic.com",
        "api_key_env": "ANTHROPIC_API_KEY",
    },
    "resp": {"api": "responses", "base_url": "https://api.openai.com", "api_key_env": "OPENAI_API_KEY"},
}


def cfg(**services: object) -> config.SidegateConfig:
    """The gRPC front with ext_authz unless the test names its services."""
    return config.parse({
        "services": services if {"auth", "front"} & services.keys() else {"auth": "ext_authz", **services},
        "providers": PROVIDERS,
        "models": {
            "gpt": {"routes": [{"provider": "openai"}]},
            "local": {"routes": [{"provider": "vllm"}]},
            "claude": {"routes": [{"provider": "anthropic"}]},
            "only-responses": {"routes": [{"provider": "resp"}]},
            "both-openai": {"routes": [{"provider": "openai"}, {"provider": "resp"}]},
            "to-local": {"routes": [{"provider": "openai"}, {"provider": "vllm"}]},
        },
    }, env={"OPENAI_API_KEY": "sk-a", "VLLM_KEY": "k", "ANTHROPIC_API_KEY": "sk-ant"})  # fmt: skip


def test_the_upstream_api_of_each_provider_kind():
    c = cfg()
    table = {name: {a: c.providers[name].upstream_api(a) for a in (Api.OPENAI, Api.RESPONSES, Api.ANTHROPIC)} for name in PROVIDERS}
    assert table["openai"] == {
        Api.OPENAI: Api.OPENAI,
        Api.RESPONSES: Api.RESPONSES,
        Api.ANTHROPIC: Api.OPENAI,
    }
    assert table["vllm"] == {Api.OPENAI: Api.OPENAI, Api.RESPONSES: Api.OPENAI, Api.ANTHROPIC: Api.OPENAI}
    assert set(table["anthropic"].values()) == {Api.ANTHROPIC}
    assert set(table["resp"].values()) == {Api.RESPONSES}
    assert c.providers["resp"].auth_style == "bearer"


def test_azure_deployment_paths_have_no_responses_endpoint_by_default():
    def provider(**kw: object) -> config.ProviderConfig:
        return config.ProviderConfig(api=Api.OPENAI, base_url="https://x.openai.azure.com", **kw)

    deployment = provider(path_prefix="/openai/deployments/{model}", query="api-version=2024-10-21")
    assert deployment.upstream_api(Api.RESPONSES) is Api.OPENAI
    assert (
        provider(path_prefix="/openai/deployments/{model}", responses=True).upstream_api(Api.RESPONSES)
        is Api.RESPONSES
    )
    assert provider(path_prefix="/openai/v1").upstream_api(Api.RESPONSES) is Api.RESPONSES


def test_responses_false_is_for_openai_providers_only():
    with pytest.raises(ValidationError, match="responses: false"):
        config.ProviderConfig(api=Api.ANTHROPIC, base_url="https://api.anthropic.com", responses=False)
    with pytest.raises(ValidationError, match="responses: false"):
        config.ProviderConfig(api=Api.RESPONSES, base_url="https://api.openai.com", responses=False)
    with pytest.raises(ValidationError, match="responses: true"):
        config.ProviderConfig(api=Api.ANTHROPIC, base_url="https://api.anthropic.com", responses=True)
    assert (
        config.ProviderConfig(
            api=Api.RESPONSES, base_url="https://api.openai.com", responses=True
        ).serves_responses
        is False
    )


def test_direct_apis_of_each_chain():
    c = cfg()
    assert lanes.direct_apis(c, "gpt", 0) == {Api.OPENAI, Api.RESPONSES}
    assert lanes.direct_apis(c, "local", 0) == {Api.OPENAI}
    assert lanes.direct_apis(c, "claude", 0) == {Api.ANTHROPIC}
    assert lanes.direct_apis(c, "only-responses", 0) == {Api.RESPONSES}
    assert lanes.direct_apis(c, "both-openai", 0) == {Api.RESPONSES}
    assert lanes.direct_apis(c, "to-local", 0) == {Api.OPENAI}
    assert lanes.direct_apis(c, "to-local", 1) == {Api.OPENAI}
    assert lanes.direct_apis(c, "unknown", 0) == frozenset()


def lane_of(
    feature: LaneFeature, model: str, *, api: Api = Api.RESPONSES, stream: bool = False, **meta: Any
) -> str:
    ctx = RequestContext(path="/v1/responses", method="POST", headers={}, api=api, model=model, route=model,
                         stream=stream, client_wants_usage=stream, meta=dict(meta))  # fmt: skip
    asyncio.run(feature.on_request(ctx))
    return str(ctx.meta.get("lane", "full"))


def test_lane_picks_direct_for_responses_passthrough_only():
    grpc_front = LaneFeature(cfg())
    assert lane_of(grpc_front, "gpt") == "direct"
    assert lane_of(grpc_front, "only-responses") == "direct"
    assert lane_of(grpc_front, "local") == "full"  # translated to chat completions
    assert lane_of(grpc_front, "claude") == "full"
    assert lane_of(grpc_front, "gpt", stream=True) == "direct"  # response.completed carries the usage
    assert lane_of(grpc_front, "gpt", store_response=True) == "full"  # the per-try stage keeps the answer
    assert lane_of(grpc_front, "gpt", cache_fill=True) == "full"
    http_front = LaneFeature(cfg(front="http", auth="inline"))
    assert lane_of(http_front, "gpt") == "direct"
    assert lane_of(http_front, "local") == "try"
    assert lane_of(http_front, "gpt", store_response=True) == "try"
    assert lane_of(http_front, "gpt", stream=True) == "direct"
    assert lane_of(http_front, "local", stream=True) == "full"  # translated streams: the gRPC per-try stage


def n(text: str) -> int:
    return len(cl100k().encode_ordinary(text))


def test_token_estimate_of_a_responses_request():
    counter = TokenCounter()
    assert counter.count(Api.RESPONSES, {"model": "gpt-4", "input": "What is the capital of France?"}) == (
        REPLY_PRIMING + PER_MESSAGE + n("What is the capital of France?")
    )
    body = {
        "model": "gpt-4",
        "instructions": "You are terse.",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]},
            {
                "type": "function_call",
                "call_id": "c1",
                "name": "get_weather",
                "arguments": '{"city":"Paris"}',
            },
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        ],
        "tools": [
            {
                "type": "function",
                "name": "get_weather",
                "description": "Weather",
                "parameters": {"type": "object"},
            }
        ],
    }
    chat = {
        "model": "gpt-4",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "tool_calls": [{"function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
            {"role": "tool", "content": "sunny"},
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                                    "parameters": {"type": "object"}}}],
    }  # fmt: skip
    responses, as_chat = counter.count(Api.RESPONSES, body), counter.count(Api.OPENAI, chat)
    # The same conversation in both shapes: the estimate is the same within a few role tokens.
    assert abs(responses - as_chat) <= 10 and responses > 30


def test_direct_lane_reads_responses_usage():
    usage = usage_of({"input_tokens": 120, "output_tokens": 7, "cached_tokens": 100, "model": "gpt-4o"})
    assert usage is not None and (usage.input_tokens, usage.output_tokens, usage.cached_tokens) == (
        120,
        7,
        100,
    )
    anthropic = usage_of({"input_tokens": 20, "output_tokens": 7, "cache_read_input_tokens": 100})
    assert anthropic is not None and (anthropic.input_tokens, anthropic.cached_tokens) == (120, 100)


@pytest.fixture(autouse=True)
def _provider_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-try stage reads the keys from its own environment."""
    for name, value in {"OPENAI_API_KEY": "sk-a", "VLLM_KEY": "k", "ANTHROPIC_API_KEY": "sk-ant"}.items():
        monkeypatch.setenv(name, value)


def start_try(model: str, provider: str, api: Api = Api.RESPONSES, stream: bool = False) -> ProviderTry:
    meta = {"api": api.value, "model": model, "stream": stream, "want_usage": stream}
    return TryStage(cfg()).start_try(meta, f"provider.{provider}", 1)


def test_a_try_passes_a_responses_request_to_a_provider_that_serves_it():
    for model, provider in (("gpt", "openai"), ("only-responses", "resp")):
        for stream in (False, True):  # a Responses stream needs nothing injected
            t = start_try(model, provider, stream=stream)
            assert t.upstream_api is Api.RESPONSES and t.body_unchanged
            changes = t.request_headers(["authorization", "content-type"])
            assert changes.set[":path"] == "/v1/responses" and changes.set["authorization"] == "Bearer sk-a"


def test_a_try_translates_where_the_provider_does_not_serve_responses():
    body = orjson.dumps({"model": "local", "input": "hi", "instructions": "be brief"})
    t = start_try("local", "vllm")
    assert t.upstream_api is Api.OPENAI and not t.body_unchanged
    out, changes = t.request_body(body)
    assert (
        changes.set[":path"] == "/v1/chat/completions"
        and orjson.loads(out)["messages"][0]["role"] == "system"
    )
    t = start_try("claude", "anthropic")
    out, changes = t.request_body(body.replace(b'"local"', b'"claude"'))
    assert changes.set[":path"] == "/v1/messages" and orjson.loads(out)["system"]


def test_chat_and_messages_clients_reach_an_api_responses_provider_as_responses():
    chat = orjson.dumps({"model": "only-responses", "messages": [{"role": "user", "content": "hi"}]})
    for api in (Api.OPENAI, Api.ANTHROPIC):
        t = start_try("only-responses", "resp", api=api)
        assert t.upstream_api is Api.RESPONSES and not t.body_unchanged
        assert t.request_headers([]).set["authorization"] == "Bearer sk-a"  # api: responses is bearer
        raw = chat if api is Api.OPENAI else chat.replace(b'"messages"', b'"max_tokens":10,"messages"')
        out, changes = t.request_body(raw)
        assert changes.set[":path"] == "/v1/responses" and orjson.loads(out)["input"]
