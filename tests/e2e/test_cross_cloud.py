"""Issue 24: one model chain across three clouds, OpenAI -> AWS Bedrock (Claude) -> Google Gemini,
through a real Envoy on both fronts: each try translated for its own provider and proven with its
own credential (a bearer key, a SigV4 signature the Bedrock fake verifies, an `x-goog-api-key`),
nothing of one try leaking into the next; a conversation whose tool call came from one cloud
continues on another; the ledger names the provider that answered and the tries it took."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from bedrock_e2e_helpers import AKID, MODEL, SECRET, write_credentials
from fault_helpers import chat_text
from gemini_helpers import GEMINI_KEY
from harness import FRONT_SERVICES, OPENAI_PROVIDER_KEY, Stack, front_stack

from sidegate.fakes import FakeProviderThread

pytestmark = pytest.mark.e2e
GEMINI_MODEL = "gemini-2.0-flash"
MSG = [{"role": "user", "content": "What is the weather in Paris?"}]
ECHO = "Echo: What is the weather in Paris?"
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]  # fmt: skip
_NO_BREAKER = {"failures": 1000, "honour_retry_after": False}  # every try of every test reaches its provider


@pytest.fixture(scope="module")
def fake_bedrock() -> Iterator[FakeProviderThread]:
    with FakeProviderThread(port=0, aws_keys={AKID: SECRET}) as fp:
        yield fp


@pytest.fixture(autouse=True)
def _clean(fake_bedrock: FakeProviderThread) -> None:
    fake_bedrock.reset()  # (the Gemini fake is tests/e2e/conftest.py's, reset there)


@pytest.fixture(scope="module", params=sorted(FRONT_SERVICES))
def gw(request, tmp_path_factory, fake_openai, fake_anthropic, fake_bedrock, fake_gemini) -> Iterator[Stack]:
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"):
        os.environ.pop(var, None)  # the stack's processes inherit this environment
    aws_dir = tmp_path_factory.mktemp("aws")
    write_credentials(aws_dir, AKID, SECRET, wrong=SECRET)
    chain = [{"provider": "openai", "model": "gpt-4o-mini"}, {"provider": "bedrock", "model": MODEL},
             {"provider": "gemini", "model": GEMINI_MODEL}]  # fmt: skip
    extra: dict[str, Any] = {
        "defaults": {"guard": None},
        "providers": {
            "bedrock": {"api": "bedrock", "base_url": fake_bedrock.url, "aws": {"region": "us-east-1"}},
            "gemini": {"api": "gemini", "base_url": fake_gemini.url, "api_key_env": "E2E_GEMINI_KEY"},
        },
        "models": {"any-cloud": {"routes": chain, "breaker": _NO_BREAKER}},
        "env": {
            "AWS_SHARED_CREDENTIALS_FILE": str(aws_dir / "credentials"), "AWS_CONFIG_FILE": str(aws_dir / "config"),
            "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SESSION_TOKEN": "",
            "AWS_EC2_METADATA_DISABLED": "true", "E2E_GEMINI_KEY": GEMINI_KEY,
        },
    }  # fmt: skip
    yield from front_stack(
        request.param, tmp_path_factory.mktemp("stack"), fake_openai.url, fake_anthropic.url, copy.deepcopy(extra)
    )


def oai(gw: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url + "/v1", api_key=gw.keys["acme"].key, max_retries=0, timeout=20)


def ant(gw: Stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.base_url, api_key=gw.keys["acme"].key, max_retries=0, timeout=20)


def _each_try_had_its_own_credential(fake_openai, fake_bedrock, fake_gemini, client_key: str) -> None:
    o, b, g = fake_openai.requests[-1], fake_bedrock.requests[-1], fake_gemini.requests[-1]
    assert o.headers["authorization"] == f"Bearer {OPENAI_PROVIDER_KEY}"
    assert b.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={AKID}/")  # verified by the fake
    assert g.headers["x-goog-api-key"] == GEMINI_KEY and "authorization" not in g.headers
    for rec in (o, b, g):
        assert client_key not in json.dumps(dict(rec.headers)) and "x-api-key" not in rec.headers


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_openai_sdk_falls_through_to_gemini(gw: Stack, fake_openai, fake_bedrock, fake_gemini, stream: bool) -> None:
    """OpenAI 429 -> Bedrock ThrottlingException (429) -> Gemini answers."""
    fake_openai.script([{"status": 429, "error": "Rate limit reached"}])
    fake_bedrock.script([{"status": 429}])
    raw = oai(gw).chat.completions.with_raw_response.create(model="any-cloud", messages=MSG, stream=stream)
    assert raw.status_code == 200
    assert raw.headers["x-sidegate-provider"] == "gemini" and raw.headers["x-sidegate-attempts"] == "3"
    assert chat_text(raw, stream) == ECHO
    assert fake_bedrock.requests[-1].route == ("converse_stream" if stream else "converse")
    path = f"/v1beta/models/{GEMINI_MODEL}:{'streamGenerateContent' if stream else 'generateContent'}"
    assert fake_gemini.requests[-1].path == path
    _each_try_had_its_own_credential(fake_openai, fake_bedrock, fake_gemini, gw.keys["acme"].key)
    led = gw.wait_ledger(lambda x: x.model == "any-cloud" and x.status == 200 and x.stream == stream)
    assert (led.provider, led.attempts) == ("gemini", 3)


def test_anthropic_sdk_falls_through_to_gemini(gw: Stack, fake_openai, fake_bedrock, fake_gemini) -> None:
    """OpenAI 503 -> Bedrock 503 -> Gemini streams the answer to an Anthropic client."""
    fake_openai.script([{"status": 503}])
    fake_bedrock.script([{"status": 503}])
    with ant(gw).messages.stream(model="any-cloud", max_tokens=100, messages=MSG) as s:
        assert "".join(s.text_stream) == ECHO
        final = s.get_final_message()
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0
    _each_try_had_its_own_credential(fake_openai, fake_bedrock, fake_gemini, gw.keys["acme"].key)


def test_a_tool_call_from_gemini_continues_on_bedrock(gw: Stack, fake_openai, fake_bedrock, fake_gemini) -> None:
    """Turn 1: OpenAI and Bedrock fail, Gemini asks for a tool. Turn 2: OpenAI fails, Bedrock takes
    the conversation with Gemini's call id, and answers from the tool's result."""
    fake_openai.script([{"status": 429}, {"status": 500}])
    fake_bedrock.script([{"status": 429}])
    fake_gemini.script([{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}])
    r = oai(gw).chat.completions.create(model="any-cloud", messages=MSG, tools=TOOLS)
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls" and json.loads(call.function.arguments) == {"city": "Paris"}
    messages = [*MSG, {"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude_none=True)]},
                {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]  # fmt: skip
    raw = oai(gw).chat.completions.with_raw_response.create(model="any-cloud", messages=messages, tools=TOOLS)
    assert raw.headers["x-sidegate-provider"] == "bedrock" and raw.parse().choices[0].message.content == "Echo: sunny"
    sent = fake_bedrock.requests[-1].json["messages"]
    assert sent[1]["content"][0]["toolUse"] == {"toolUseId": call.id, "name": "get_weather", "input": {"city": "Paris"}}
    assert sent[2]["content"][0]["toolResult"]["toolUseId"] == call.id
