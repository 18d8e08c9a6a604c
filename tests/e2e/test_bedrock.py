"""Issue 24: AWS Bedrock as a provider, through a real Envoy, behind both fronts: the openai,
anthropic and Responses SDKs as clients, every try SigV4-signed by the per-try stage and verified
for real by the Bedrock fake (botocore recomputes the signature with the test secret), the
Converse answers and binary event streams translated back, usage trued up exactly, fallback across
clouds both ways, a refused credential named nowhere, and keys rotated in the shared credentials
file taking effect without a restart."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from bedrock_e2e_helpers import AKID, AKID2, MODEL, PNG_B64, SECRET, SECRET2, tokens, write_credentials
from harness import FRONT_SERVICES, Stack, front_stack

from sidegate import keys
from sidegate.fakes import FakeProviderThread

pytestmark = pytest.mark.e2e
WRONG_SECRET = "wrong/secret+EXAMPLE00000000000000000009"
API_KEY = "bedrock-api-key-EXAMPLE-0000000001"
METERED = keys.new_key()
"""The key of a tenant only the true-up test uses (its quota window holds that test's tokens)."""
PRICE_IN, PRICE_OUT = 0.8, 4.0  # USD per million tokens: Claude 3.5 Haiku on Bedrock
MSG = [{"role": "user", "content": "What is the weather in Paris?"}]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]  # fmt: skip


@pytest.fixture(scope="module")
def fake_bedrock() -> Iterator[FakeProviderThread]:
    fp = FakeProviderThread(port=0, aws_keys={AKID: SECRET}, api_key=API_KEY)
    fp.start()
    yield fp
    fp.stop()


@pytest.fixture(autouse=True)
def _clean_bedrock(fake_bedrock: FakeProviderThread) -> None:
    fake_bedrock.reset()


def _extra(bedrock_url: str, aws_dir: Path) -> dict[str, Any]:
    bedrock = {"api": "bedrock", "base_url": bedrock_url, "aws": {"region": "us-east-1", "refresh_s": 1}}
    return {
        "defaults": {"guard": None},
        "providers": {
            "bedrock": bedrock,
            "bedrock-wrong": {**bedrock, "aws": {**bedrock["aws"], "profile": "wrong"}},
            "bedrock-key": {"api": "bedrock", "base_url": bedrock_url, "auth": "bearer", "api_key_env": "E2E_BEDROCK_KEY"},
        },
        "models": {
            "claude-br": {"routes": [{"provider": "bedrock", "model": MODEL}]},
            "br-then-openai": {"routes": [{"provider": "bedrock", "model": MODEL}, {"provider": "openai", "model": "gpt-4o-mini"}]},
            "openai-then-br": {"routes": [{"provider": "openai", "model": "gpt-4o-mini"}, {"provider": "bedrock", "model": MODEL}]},
            "three-clouds": {"routes": [{"provider": "openai", "model": "gpt-4o-mini"}, {"provider": "bedrock", "model": MODEL},
                                        {"provider": "anthropic", "model": "claude-3-5-haiku-20241022"}]},
            "br-wrong": {"routes": [{"provider": "bedrock-wrong", "model": MODEL}]},
            "br-key": {"routes": [{"provider": "bedrock-key", "model": MODEL}]},
        },
        "quota": {"prices": {"*anthropic.claude-3-5-haiku*": {"input_per_mtok": PRICE_IN, "output_per_mtok": PRICE_OUT}}},
        "tenants": {"metered": {"keys": [{"id": METERED[1], "hash": keys.hash_key(METERED[0]), "models": ["*"]}],
                                "quota": {"limits": {"tpm": 10_000_000}}}},
        "env": {
            # The extproc's AWS chain: this shared credentials file only (no keys in the
            # environment, no ~/.aws, no metadata server).
            "AWS_SHARED_CREDENTIALS_FILE": str(aws_dir / "credentials"), "AWS_CONFIG_FILE": str(aws_dir / "config"),
            "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SESSION_TOKEN": "",
            "AWS_EC2_METADATA_DISABLED": "true", "E2E_BEDROCK_KEY": API_KEY,
        },
    }  # fmt: skip


@pytest.fixture(scope="module", params=sorted(FRONT_SERVICES))
def gw(request, tmp_path_factory, fake_openai, fake_anthropic, fake_bedrock) -> Iterator[Stack]:
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"):
        os.environ.pop(var, None)  # the stack's processes inherit this environment
    aws_dir = tmp_path_factory.mktemp("aws")
    write_credentials(aws_dir, AKID, SECRET, wrong=WRONG_SECRET)
    extra = _extra(fake_bedrock.url, aws_dir)
    for s in front_stack(
        request.param, tmp_path_factory.mktemp("stack"), fake_openai.url, fake_anthropic.url, extra
    ):
        s.extra["aws_dir"] = str(aws_dir)  # the rotation test rewrites its credentials file
        yield s


def oai(gw: Stack, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=gw.base_url + "/v1", api_key=key or gw.keys["acme"].key, max_retries=0, timeout=20
    )


def ant(gw: Stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.base_url, api_key=gw.keys["acme"].key, max_retries=0, timeout=20)


def test_openai_text_signed_and_priced(gw: Stack, fake_bedrock) -> None:
    fake_bedrock.script([{"usage": {"input_tokens": 12, "output_tokens": 5}}])
    r = oai(gw).chat.completions.create(
        model="claude-br", messages=[{"role": "system", "content": "Be terse."}, *MSG], max_tokens=50
    )
    assert (
        r.choices[0].message.content == "Echo: What is the weather in Paris?"
        and r.choices[0].finish_reason == "stop"
    )
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (12, 5)
    rec = fake_bedrock.requests[-1]
    assert rec.route == "converse" and rec.path == f"/model/{MODEL}/converse"
    assert rec.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={AKID}/")
    assert rec.json["system"] == [{"text": "Be terse."}] and rec.json["inferenceConfig"]["maxTokens"] == 50
    led = gw.wait_ledger(lambda x: x.model == "claude-br" and (x.input_tokens, x.output_tokens) == (12, 5))
    assert (led.provider, led.upstream_model, led.status) == ("bedrock", MODEL, 200)
    assert led.cost_usd == pytest.approx((12 * PRICE_IN + 5 * PRICE_OUT) / 1e6, abs=1e-6)


def test_openai_stream_with_usage(gw: Stack, fake_bedrock) -> None:
    fake_bedrock.script([{"chunks": 5, "usage": {"input_tokens": 9, "output_tokens": 6}}])
    chunks = list(oai(gw).chat.completions.create(model="claude-br", messages=MSG, stream=True,
                                                  stream_options={"include_usage": True}))  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: What is the weather in Paris?"
    assert any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks)
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (9, 6)
    assert fake_bedrock.requests[-1].route == "converse_stream"
    led = gw.wait_ledger(
        lambda x: x.model == "claude-br" and x.stream and (x.input_tokens, x.output_tokens) == (9, 6)
    )
    assert not led.aborted


def test_usage_trued_up_exactly(gw: Stack, fake_bedrock) -> None:
    """The quota reserves max_tokens and trues up to the Bedrock answer's usage, exactly."""
    before = tokens(gw, "metered")
    fake_bedrock.script(
        [
            {"usage": {"input_tokens": 21, "output_tokens": 13}},
            {"usage": {"input_tokens": 7, "output_tokens": 4}},
        ]
    )
    oai(gw, METERED[0]).chat.completions.create(model="claude-br", messages=MSG, max_tokens=900)
    assert tokens(gw, "metered", expect=before + 34) == before + 34
    list(
        oai(gw, METERED[0]).chat.completions.create(
            model="claude-br", messages=MSG, max_tokens=900, stream=True
        )
    )
    assert tokens(gw, "metered", expect=before + 45) == before + 45


def test_tool_round_trip_and_image(gw: Stack, fake_bedrock) -> None:
    fake_bedrock.script([{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}])
    r = oai(gw).chat.completions.create(model="claude-br", messages=MSG, tools=TOOLS)
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls" and json.loads(call.function.arguments) == {
        "city": "Paris"
    }
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                     {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}}]},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude_none=True)]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]  # fmt: skip
    r = oai(gw).chat.completions.create(model="claude-br", messages=messages, tools=TOOLS)
    assert r.choices[0].message.content == "Echo: sunny"
    sent = fake_bedrock.requests[-1].json
    assert sent["messages"][0]["content"][1] == {"image": {"format": "png", "source": {"bytes": PNG_B64}}}
    assert sent["messages"][1]["content"][0]["toolUse"]["toolUseId"] == call.id
    assert sent["messages"][2]["content"][0]["toolResult"]["toolUseId"] == call.id


def test_anthropic_sdk_text_stream_and_tools(gw: Stack, fake_bedrock) -> None:
    m = ant(gw).messages.create(model="claude-br", max_tokens=100, system="Be terse.", messages=MSG)
    assert m.content[0].text == "Echo: What is the weather in Paris?" and m.stop_reason == "end_turn"
    assert m.usage.input_tokens > 0 and m.usage.output_tokens > 0
    fake_bedrock.script(
        [{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Lyon"}}], "chunks": 3}]
    )
    tools = [
        {"name": "get_weather", "description": "Weather", "input_schema": TOOLS[0]["function"]["parameters"]}
    ]
    with ant(gw).messages.stream(model="claude-br", max_tokens=100, messages=MSG, tools=tools) as s:
        final = s.get_final_message()
    tool = next(b for b in final.content if b.type == "tool_use")
    assert final.stop_reason == "tool_use" and tool.name == "get_weather" and tool.input == {"city": "Lyon"}
    reply = [*MSG, {"role": "assistant", "content": [tool.model_dump()]},
             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool.id, "content": "rainy"}]}]  # fmt: skip
    with ant(gw).messages.stream(model="claude-br", max_tokens=100, messages=reply, tools=tools) as s:
        assert "".join(s.text_stream) == "Echo: rainy"


def test_responses_client(gw: Stack, fake_bedrock) -> None:
    r = oai(gw).responses.create(model="claude-br", input="Hello Bedrock", instructions="Be terse.")
    assert r.output_text == "Echo: Hello Bedrock" and r.usage.input_tokens > 0
    assert fake_bedrock.requests[-1].json["system"] == [{"text": "Be terse."}]
    events = list(oai(gw).responses.create(model="claude-br", input="Stream it", stream=True))
    assert events[-1].type == "response.completed" and events[-1].response.output_text == "Echo: Stream it"


def test_throttling_falls_back_to_another_cloud(gw: Stack, fake_bedrock, fake_openai) -> None:
    fake_bedrock.script([{"status": 429}, {"status": 503}])
    for _ in range(2):
        r = oai(gw).chat.completions.create(model="br-then-openai", messages=MSG)
        assert r.choices[0].message.content == "Echo: What is the weather in Paris?"
    assert [q.route for q in fake_bedrock.requests] == ["converse", "converse"]
    assert len(fake_openai.requests) == 2 and fake_openai.requests[-1].json["model"] == "gpt-4o-mini"
    led = gw.wait_ledger(lambda x: x.model == "br-then-openai" and x.status == 200)
    assert (led.provider, led.attempts) == ("openai", 2)


def test_openai_503_falls_back_to_bedrock(gw: Stack, fake_bedrock, fake_openai) -> None:
    fake_openai.script([{"status": 503}])
    with ant(gw).messages.stream(model="openai-then-br", max_tokens=100, messages=MSG) as s:
        assert "".join(s.text_stream) == "Echo: What is the weather in Paris?"
    assert fake_bedrock.requests[-1].route == "converse_stream"
    led = gw.wait_ledger(lambda x: x.model == "openai-then-br" and x.status == 200)
    assert (led.provider, led.attempts) == ("bedrock", 2)


def test_throttled_bedrock_mid_chain(gw: Stack, fake_bedrock, fake_openai, fake_anthropic) -> None:
    """OpenAI 503 -> Bedrock ThrottlingException -> Anthropic answers: Bedrock fails over mid-chain."""
    fake_openai.script([{"status": 503}])
    fake_bedrock.script([{"status": 429}])
    chunks = list(oai(gw).chat.completions.create(model="three-clouds", messages=MSG, stream=True))
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        == "Echo: What is the weather in Paris?"
    )
    assert (
        fake_bedrock.requests[-1].route == "converse_stream"
        and fake_anthropic.requests[-1].path == "/v1/messages"
    )
    led = gw.wait_ledger(lambda x: x.model == "three-clouds" and x.status == 200)
    assert (led.provider, led.attempts) == ("anthropic", 3)


def test_mid_stream_exception_frame_is_a_stream_error(gw: Stack, fake_bedrock) -> None:
    fake_bedrock.script(
        [{"stream_error": {"after": 2, "type": "throttlingException", "message": "Too many tokens"}}]
    )
    with pytest.raises(openai.APIError):
        list(oai(gw).chat.completions.create(model="claude-br", messages=MSG, stream=True))


def test_wrong_secret_is_a_502_naming_no_secret(gw: Stack, fake_bedrock) -> None:
    for client, call in (
        (oai(gw), lambda c: c.chat.completions.create(model="br-wrong", messages=MSG)),
        (ant(gw), lambda c: c.messages.create(model="br-wrong", max_tokens=10, messages=MSG)),
    ):
        with pytest.raises((openai.APIStatusError, anthropic.APIStatusError)) as exc:
            call(client)
        assert exc.value.status_code == 502
        text = exc.value.response.text
        for secret in (WRONG_SECRET, SECRET, AKID, "InvalidSignatureException"):
            assert secret not in text
    assert (
        fake_bedrock.requests[-1].headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={AKID}/")
    )


def test_bedrock_api_key_as_bearer(gw: Stack, fake_bedrock) -> None:
    r = oai(gw).chat.completions.create(model="br-key", messages=MSG)
    assert r.choices[0].message.content == "Echo: What is the weather in Paris?"
    rec = fake_bedrock.requests[-1]
    assert rec.headers["authorization"] == f"Bearer {API_KEY}" and "x-amz-date" not in rec.headers


@pytest.mark.alone  # bounds a duration
def test_rotated_keys_take_effect_without_restart(gw: Stack, fake_bedrock) -> None:
    """New keys in the shared credentials file; the provider then accepts only the new pair: the
    gateway signs with them within `aws.refresh_s` (1 s here), no restart. Then back."""
    aws_dir = Path(gw.extra["aws_dir"])
    try:
        for akid, secret in ((AKID2, SECRET2), (AKID, SECRET)):
            write_credentials(aws_dir, akid, secret, wrong=WRONG_SECRET)
            fake_bedrock.provider.aws_keys = {akid: secret}
            rotated_at = time.monotonic()
            deadline, status = rotated_at + 10, 0
            while time.monotonic() < deadline:
                try:
                    r = oai(gw).chat.completions.create(model="claude-br", messages=MSG)
                    status = 200
                    break
                except openai.APIStatusError as e:
                    status = e.status_code
                    assert status == 502 and secret not in e.response.text
                    time.sleep(0.2)
            assert status == 200 and r.choices[0].message.content.startswith("Echo:")
            assert time.monotonic() - rotated_at < 1 + 3  # refresh_s, plus a loaded machine's slack
            assert (
                fake_bedrock.requests[-1]
                .headers["authorization"]
                .startswith(f"AWS4-HMAC-SHA256 Credential={akid}/")
            )
    finally:
        write_credentials(aws_dir, AKID, SECRET, wrong=WRONG_SECRET)
        fake_bedrock.provider.aws_keys = {AKID: SECRET}


def test_google_genai_client_on_a_bedrock_model(gw: Stack, fake_bedrock) -> None:
    """A Gemini API client (google-genai) on a Bedrock-served model: translated both ways, signed,
    its stream in Gemini's SSE with the usage on the last chunk."""
    from gemini_inbound_helpers import genai_client
    from google.genai import types

    client = genai_client(gw)
    config = types.GenerateContentConfig(system_instruction="Be terse.", max_output_tokens=50)
    fake_bedrock.script([{"usage": {"input_tokens": 12, "output_tokens": 5}}])
    r = client.models.generate_content(model="claude-br", contents="What is the weather in Paris?", config=config)
    assert r.text == "Echo: What is the weather in Paris?"
    assert (r.usage_metadata.prompt_token_count, r.usage_metadata.candidates_token_count) == (12, 5)
    rec = fake_bedrock.requests[-1]
    assert rec.route == "converse" and rec.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={AKID}/")
    assert rec.json["system"] == [{"text": "Be terse."}] and rec.json["inferenceConfig"]["maxTokens"] == 50
    fake_bedrock.script([{"chunks": 5, "usage": {"input_tokens": 9, "output_tokens": 6}}])
    chunks = list(client.models.generate_content_stream(model="claude-br", contents="What is the weather in Paris?"))
    assert "".join(c.text or "" for c in chunks) == "Echo: What is the weather in Paris?"
    assert chunks[-1].usage_metadata.candidates_token_count == 6
    assert fake_bedrock.requests[-1].route == "converse_stream"
