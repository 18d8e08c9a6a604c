"""Issue 24: a Gemini API provider (`api: gemini`, the Gemini fake) behind a real Envoy, on both
fronts, with the openai and anthropic SDKs as clients: text, streaming, a tool round trip, an image,
usage trued up exactly, a 429 (with retry-after) and a 5xx from Gemini falling back to an OpenAI
provider and the reverse, a wrong key giving a 502 that names no secret, embeddings, a Responses
client. What the fake received passes google-genai's types (the fake refuses anything else)."""

from __future__ import annotations

import base64
import copy
import json
import struct
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from fault_helpers import chat_text, settled_tokens, tenant_usage
from gemini_helpers import GEMINI_KEY, PNG_B64, extra_config, own_key
from harness import FRONT_SERVICES, OPENAI_PROVIDER_KEY, Stack, front_stack

from sidegate.fakes import FakeProviderThread

pytestmark = pytest.mark.e2e
MSG = [{"role": "user", "content": "What is the weather in Paris?"}]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]  # fmt: skip
ANT_TOOLS = [{"name": "get_weather", "description": "Weather for a city",
              "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]  # fmt: skip
GEN = "/v1beta/models/gemini-2.0-flash:generateContent"
STREAM = "/v1beta/models/gemini-2.0-flash:streamGenerateContent"


@pytest.fixture(scope="module", params=sorted(FRONT_SERVICES))
def gw(request, tmp_path_factory, fake_openai, fake_anthropic, fake_gemini) -> Iterator[Stack]:
    extra = extra_config(fake_gemini.url)
    yield from front_stack(
        request.param,
        tmp_path_factory.mktemp("stack"),
        fake_openai.url,
        fake_anthropic.url,
        copy.deepcopy(extra),
    )


def oai(gw: Stack, key: str = "acme") -> openai.OpenAI:
    secret = own_key(key) or gw.keys[key].key
    return openai.OpenAI(base_url=gw.base_url + "/v1", api_key=secret, max_retries=0, timeout=20)


def ant(gw: Stack, key: str = "acme") -> anthropic.Anthropic:
    secret = own_key(key) or gw.keys[key].key
    return anthropic.Anthropic(base_url=gw.base_url, api_key=secret, max_retries=0, timeout=20)


def _sent(fake: FakeProviderThread, path: str = GEN) -> dict[str, Any]:
    """The last body the Gemini fake received on `path`, with its key checked."""
    rec = fake.requests[-1]
    assert rec.path == path and rec.headers["x-goog-api-key"] == GEMINI_KEY
    assert "authorization" not in rec.headers and "x-api-key" not in rec.headers
    return rec.json


def test_openai_sdk_text_and_stream(gw: Stack, fake_gemini) -> None:
    client = oai(gw)
    r = client.chat.completions.create(
        model="gemini-flash", messages=[{"role": "system", "content": "Be terse."}, *MSG], max_tokens=50
    )
    assert r.choices[0].message.content == "Echo: What is the weather in Paris?"
    assert r.choices[0].finish_reason == "stop" and r.usage.completion_tokens > 0
    body = _sent(fake_gemini)
    assert body["systemInstruction"]["parts"][0]["text"] == "Be terse."
    assert body["generationConfig"]["maxOutputTokens"] == 50
    chunks = list(client.chat.completions.create(model="gemini-flash", stream=True, stream_options={"include_usage": True},
                                                 messages=[{"role": "system", "content": "Be terse."}, *MSG]))  # fmt: skip
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == r.choices[0].message.content
    )
    assert any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks)
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == r.usage.prompt_tokens
    _sent(fake_gemini, STREAM)
    assert fake_gemini.requests[-1].query == {"alt": "sse"}


def test_anthropic_sdk_text_and_stream(gw: Stack, fake_gemini) -> None:
    client = ant(gw)
    m = client.messages.create(model="gemini-flash", max_tokens=64, system="Be terse.", messages=MSG)
    assert m.content[0].text == "Echo: What is the weather in Paris?" and m.stop_reason == "end_turn"
    assert m.usage.input_tokens > 0 and m.usage.output_tokens > 0
    assert _sent(fake_gemini)["systemInstruction"]["parts"][0]["text"] == "Be terse."
    with client.messages.stream(model="gemini-flash", max_tokens=64, messages=MSG) as s:
        final = s.get_final_message()
    assert final.content[0].text == m.content[0].text and final.usage.output_tokens == m.usage.output_tokens
    _sent(fake_gemini, STREAM)


@pytest.mark.parametrize("stream", [False, True])
def test_openai_tool_round_trip(gw: Stack, fake_gemini, stream: bool) -> None:
    fake_gemini.script([{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}])
    client = oai(gw)
    if stream:
        calls: dict[int, dict[str, str]] = {}
        finish = None
        for chunk in client.chat.completions.create(
            model="gemini-flash", messages=MSG, tools=TOOLS, stream=True
        ):
            for choice in chunk.choices:
                finish = choice.finish_reason or finish
                for t in choice.delta.tool_calls or []:
                    got = calls.setdefault(t.index, {"id": "", "name": "", "arguments": ""})
                    got["id"] = t.id or got["id"]
                    got["name"] = t.function.name or got["name"]
                    got["arguments"] += t.function.arguments or ""
        call = calls[0]
    else:
        r = client.chat.completions.create(model="gemini-flash", messages=MSG, tools=TOOLS)
        finish = r.choices[0].finish_reason
        tc = r.choices[0].message.tool_calls[0]
        call = {"id": tc.id, "name": tc.function.name, "arguments": tc.function.arguments}
    assert (
        finish == "tool_calls"
        and call["name"] == "get_weather"
        and json.loads(call["arguments"]) == {"city": "Paris"}
    )
    decl = _sent(fake_gemini, STREAM if stream else GEN)["tools"][0]["functionDeclarations"][0]
    assert decl["name"] == "get_weather"
    messages = [*MSG, {"role": "assistant", "content": None, "tool_calls": [
        {"id": call["id"], "type": "function", "function": {"name": "get_weather", "arguments": call["arguments"]}}]},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}]  # fmt: skip
    r2 = client.chat.completions.create(model="gemini-flash", messages=messages, tools=TOOLS)
    assert r2.choices[0].message.content == "Echo: sunny"  # the fake checked the call/response pairing
    contents = _sent(fake_gemini)["contents"]
    assert contents[1]["role"] == "model" and contents[1]["parts"][0]["functionCall"]["name"] == "get_weather"
    assert contents[2]["parts"][0]["functionResponse"]["name"] == "get_weather"


def test_a_gemini_3_tool_round_trip_passes_its_signature_check(gw: Stack, fake_gemini) -> None:
    """Gemini 3 wants a `thoughtSignature` on the calls of the current turn: a call made by a model
    turn it never signed (here, translated from the OpenAI client's history) carries the
    documented skip value, or the fake answers 400 as Google does."""
    fake_gemini.script([{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]}])
    client = oai(gw)
    r = client.chat.completions.create(model="gemini-3", messages=MSG, tools=TOOLS)
    tc = r.choices[0].message.tool_calls[0]
    messages = [*MSG, r.choices[0].message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": tc.id, "content": "snow"}]  # fmt: skip
    r2 = client.chat.completions.create(model="gemini-3", messages=messages, tools=TOOLS)
    assert r2.choices[0].message.content == "Echo: snow"
    sent = _sent(fake_gemini, "/v1beta/models/gemini-3-pro-preview:generateContent")
    assert sent["contents"][1]["parts"][0]["thoughtSignature"]


def test_anthropic_tool_round_trip(gw: Stack, fake_gemini) -> None:
    fake_gemini.script([{"tool_calls": "auto"}])
    client = ant(gw)
    m = client.messages.create(model="gemini-flash", max_tokens=64, messages=MSG, tools=ANT_TOOLS)
    use = next(b for b in m.content if b.type == "tool_use")
    assert m.stop_reason == "tool_use" and use.name == "get_weather" and "city" in use.input
    messages = [*MSG, {"role": "assistant", "content": [b.model_dump() for b in m.content]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "rainy"}]}]  # fmt: skip
    m2 = client.messages.create(model="gemini-flash", max_tokens=64, messages=messages, tools=ANT_TOOLS)
    assert m2.content[0].text == "Echo: rainy"


def test_an_image_from_either_sdk(gw: Stack, fake_gemini) -> None:
    url = f"data:image/png;base64,{PNG_B64}"
    r = oai(gw).chat.completions.create(model="gemini-flash", messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": url}}]}])  # fmt: skip
    assert r.choices[0].message.content == "Echo: What is this?"
    parts = _sent(fake_gemini)["contents"][0]["parts"]
    blob = next(p.get("inlineData") or p.get("inline_data") for p in parts if "text" not in p)
    assert blob["data"] == PNG_B64 and (blob.get("mimeType") or blob.get("mime_type")) == "image/png"
    m = ant(gw).messages.create(model="gemini-flash", max_tokens=32, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
        {"type": "text", "text": "And this?"}]}])  # fmt: skip
    assert m.content[0].text == "Echo: And this?"
    assert any("inlineData" in p or "inline_data" in p for p in _sent(fake_gemini)["contents"][0]["parts"])


@pytest.mark.parametrize("stream", [False, True])
def test_usage_is_trued_up_to_gemini_usage_metadata(gw: Stack, fake_gemini, stream: bool) -> None:
    """The quota reserved the prompt estimate plus max_tokens, then settled to exactly what
    `usageMetadata` reported (the fake's scripted counts), on a tenant no other test uses."""
    tenant = f"gem-metered-{'s' if stream else 'b'}"
    fake_gemini.script([{"usage": {"prompt_tokens": 11, "completion_tokens": 7}}])
    client = oai(gw, tenant)
    if stream:
        chunks = list(client.chat.completions.create(model="gemini-flash", messages=MSG, max_tokens=500, stream=True,
                                                     stream_options={"include_usage": True}))  # fmt: skip
        u = chunks[-1].usage
    else:
        u = client.chat.completions.create(model="gemini-flash", messages=MSG, max_tokens=500).usage
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (11, 7, 18)
    assert settled_tokens(gw, tenant) == 18
    cost = (11 * 0.10 + 7 * 0.40) / 1e6
    assert tenant_usage(gw, tenant)["spent_day_usd"] == pytest.approx(cost)
    rec = gw.wait_ledger(lambda x: x.tenant == tenant)
    assert (rec.provider, rec.model, rec.input_tokens, rec.output_tokens) == ("gemini", "gemini-flash", 11, 7)
    assert rec.cost_usd == pytest.approx(cost, abs=1e-6)


FAILURES = [
    pytest.param({"status": 429, "retry_after": 7}, id="429"),
    pytest.param({"status": 503, "error": "The model is overloaded."}, id="503"),
    pytest.param({"status": 500}, id="500"),
]


@pytest.mark.parametrize("failure", FAILURES)
@pytest.mark.parametrize("stream", [False, True])
def test_gemini_fails_openai_fallback_answers(
    gw: Stack, fake_gemini, fake_openai, failure, stream: bool
) -> None:
    fake_gemini.script([failure])
    raw = oai(gw).chat.completions.with_raw_response.create(model="gem-then-oai", messages=MSG, stream=stream)
    assert raw.status_code == 200
    assert (raw.headers["x-sidegate-provider"], raw.headers["x-sidegate-attempts"]) == ("openai", "2")
    assert chat_text(raw, stream) == "Echo: What is the weather in Paris?"
    assert len(fake_gemini.requests) == 1 and len(fake_openai.requests) == 1
    rec = fake_openai.requests[0]
    assert (
        rec.headers["authorization"] == f"Bearer {OPENAI_PROVIDER_KEY}"
        and "x-goog-api-key" not in rec.headers
    )


def test_gemini_429_alone_reaches_the_client_with_retry_after(gw: Stack, fake_gemini) -> None:
    fake_gemini.script([{"status": 429, "retry_after": 9}])
    with pytest.raises(openai.RateLimitError) as err:
        oai(gw).chat.completions.create(model="gemini-flash", messages=MSG)
    assert err.value.response.headers["retry-after"] == "9"
    fake_gemini.script([{"status": 429, "retry_after": 9}])
    with pytest.raises(anthropic.RateLimitError) as err2:
        ant(gw).messages.create(model="gemini-flash", max_tokens=16, messages=MSG)
    assert err2.value.response.headers["retry-after"] == "9" and err2.value.body["type"] == "error"


def test_googles_retry_delay_in_the_body_reaches_the_client_as_retry_after(gw: Stack, fake_gemini) -> None:
    """The Gemini API says when to retry in its 429's body (`RetryInfo.retryDelay`), with no
    `retry-after` header: the client still gets one, in every format."""
    fake_gemini.script([{"status": 429, "retry_after": "7s"}])
    with pytest.raises(openai.RateLimitError) as err:
        oai(gw).chat.completions.create(model="gemini-flash", messages=MSG)
    assert err.value.response.headers["retry-after"] == "7"
    fake_gemini.script([{"status": 429, "retry_after": "7s"}])
    with pytest.raises(anthropic.RateLimitError) as err2:
        ant(gw).messages.create(model="gemini-flash", max_tokens=16, messages=MSG)
    assert err2.value.response.headers["retry-after"] == "7"


@pytest.mark.parametrize("stream", [False, True])
def test_openai_fails_gemini_fallback_answers(gw: Stack, fake_gemini, fake_openai, stream: bool) -> None:
    fake_openai.script([{"status": 503, "error": "overloaded"}, {"status": 429, "retry_after": 3}])
    raw = oai(gw).chat.completions.with_raw_response.create(model="oai-then-gem", messages=MSG, stream=stream)
    assert chat_text(raw, stream) == "Echo: What is the weather in Paris?"
    assert (raw.headers["x-sidegate-provider"], raw.headers["x-sidegate-attempts"]) == ("gemini", "2")
    client = ant(gw)  # the second scripted failure, a 429, for an Anthropic client
    if stream:
        with client.messages.stream(model="oai-then-gem", max_tokens=64, messages=MSG) as s:
            m = s.get_final_message()
    else:
        m = client.messages.create(model="oai-then-gem", max_tokens=64, messages=MSG)
    assert m.content[0].text == "Echo: What is the weather in Paris?"
    assert len(fake_openai.requests) == 2 and len(fake_gemini.requests) == 2
    assert _sent(fake_gemini, STREAM if stream else GEN)["contents"]


def test_a_wrong_gemini_key_is_a_502_naming_no_secret(gw: Stack, fake_gemini) -> None:
    for client_call in (
        lambda: oai(gw).chat.completions.create(model="gem-badkey", messages=MSG),
        lambda: ant(gw).messages.create(model="gem-badkey", max_tokens=16, messages=MSG),
    ):
        with pytest.raises((openai.APIStatusError, anthropic.APIStatusError)) as err:
            client_call()
        assert err.value.status_code == 502
        text = err.value.response.text
        assert "wrong-gemini-key" not in text and GEMINI_KEY not in text and "credentials" in text
    assert fake_gemini.requests[-1].headers["x-goog-api-key"] == "wrong-gemini-key"


def test_embeddings_through_gemini(gw: Stack, fake_gemini) -> None:
    client = oai(gw)
    as_float = client.embeddings.create(
        model="gem-emb", input=["hello there", "abc"], encoding_format="float", dimensions=8
    )
    assert [(d.index, len(d.embedding)) for d in as_float.data] == [(0, 8), (1, 8)]
    assert as_float.usage.prompt_tokens == 3 + 1  # ceil(11 / 4) + ceil(3 / 4): the gateway's count
    sent = _sent(fake_gemini, "/v1beta/models/text-embedding-004:batchEmbedContents")
    assert [r["content"]["parts"][0]["text"] for r in sent["requests"]] == ["hello there", "abc"]
    assert {r["model"] for r in sent["requests"]} == {"models/text-embedding-004"}
    as_b64 = client.embeddings.create(
        model="gem-emb", input=["hello there", "abc"], dimensions=8
    )  # SDK: base64
    assert as_b64.data[0].embedding == pytest.approx(as_float.data[0].embedding, abs=1e-6)
    raw = client.embeddings.with_raw_response.create(
        model="gem-emb", input="x", encoding_format="base64", dimensions=3
    )
    body = json.loads(raw.http_response.text)
    assert len(struct.unpack("<3f", base64.b64decode(body["data"][0]["embedding"]))) == 3
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model="gem-emb", input=[[1, 2, 3]])
    assert err.value.param == "input" and "text only" in err.value.message


def test_embeddings_are_charged_the_gateways_count(gw: Stack, fake_gemini) -> None:
    tenant = "gem-emb-metered"
    r = oai(gw, tenant).embeddings.create(model="gem-emb", input="supercalifragilisticexpialidocious")
    assert r.usage.prompt_tokens == 9  # ceil(34 / 4)
    assert settled_tokens(gw, tenant) == 9


def test_a_responses_client_to_gemini(gw: Stack, fake_gemini) -> None:
    client = oai(gw)
    r = client.responses.create(model="gemini-flash", input="Say hi", instructions="Be terse.")
    assert r.output_text == "Echo: Say hi" and r.usage.input_tokens > 0
    assert _sent(fake_gemini)["systemInstruction"]["parts"][0]["text"] == "Be terse."
    events = list(client.responses.create(model="gemini-flash", input="Say hi", stream=True))
    assert events[-1].type == "response.completed" and events[-1].response.output_text == "Echo: Say hi"


def test_a_safety_finish_and_a_blocked_prompt_are_content_filtered(gw: Stack, fake_gemini) -> None:
    fake_gemini.script([{"finish_reason": "SAFETY"}, {"finish_reason": "prompt:SAFETY"}] * 2)
    client = oai(gw)
    for _ in range(2):
        r = client.chat.completions.create(model="gemini-flash", messages=MSG)
        assert r.choices[0].finish_reason == "content_filter" and not r.choices[0].message.content
    for _ in range(2):
        chunks = list(client.chat.completions.create(model="gemini-flash", messages=MSG, stream=True))
        assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
            "content_filter"
        ]
        assert not "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    fake_gemini.script([{"finish_reason": "SAFETY"}])
    m = ant(gw).messages.create(model="gemini-flash", max_tokens=16, messages=MSG)
    assert m.stop_reason == "refusal"


def test_a_gemini_error_mid_stream_ends_the_clients_stream_with_an_error(gw: Stack, fake_gemini) -> None:
    fake_gemini.script(
        [{"stream_error": {"after": 1, "code": 503, "message": "overloaded"}, "chunks": 4}] * 2
    )
    with pytest.raises(openai.APIError):
        for _ in oai(gw).chat.completions.create(model="gemini-flash", messages=MSG, stream=True):
            pass
    with (
        pytest.raises(anthropic.APIError),
        ant(gw).messages.stream(model="gemini-flash", max_tokens=64, messages=MSG) as s,
    ):
        s.get_final_message()
    fake_gemini.script([{"truncate": 2, "chunks": 4}])  # the connection ends before the finish reason
    with pytest.raises(openai.APIError):
        for _ in oai(gw).chat.completions.create(model="gemini-flash", messages=MSG, stream=True):
            pass
