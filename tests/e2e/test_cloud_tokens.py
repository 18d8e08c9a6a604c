"""Issue 24: providers reached with cloud identities, through a real Envoy behind both fronts:
Anthropic's models on Vertex AI (OAuth2 tokens minted by google-auth from a service account key
file, or from the metadata server) and Azure OpenAI with Microsoft Entra ID tokens
(azure-identity, managed identity). The fake token endpoints verify what they receive (the
assertion's RS256 signature, the identity header); the fake provider accepts only the unexpired
tokens they minted. Tokens live 8 s and are replaced 5 s before expiry: every test runs across
refreshes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest
from cloud_helpers import (
    GEMINI_PATH,
    TOKEN_LIFE_S,
    VERTEX_PREFIX,
    ant,
    cloud_config,
    ledgered,
    oai,
    vertex_body,
)
from harness import Stack, front_stack

from sidegate.fakes import FakeProviderThread
from sidegate.fakes.tokens import TokenIssuer

pytestmark = pytest.mark.e2e
MSG = [{"role": "user", "content": "What is the weather in Paris?"}]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]  # fmt: skip
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


@pytest.fixture(scope="module")
def issuer() -> Iterator[TokenIssuer]:
    with TokenIssuer(expires_in=TOKEN_LIFE_S) as tokens:
        yield tokens


@pytest.fixture(scope="module")
def cloud(issuer: TokenIssuer) -> Iterator[FakeProviderThread]:
    """Vertex AI and Azure OpenAI on one fake: only the issuer's live tokens pass."""
    fp = FakeProviderThread(port=0, token_check=issuer.valid)
    fp.start()
    yield fp
    fp.stop()


@pytest.fixture(autouse=True)
def _clean_cloud(cloud: FakeProviderThread) -> None:
    cloud.reset()


@pytest.fixture(scope="module", params=["ext_proc", "http"])
def gw(request, tmp_path_factory, fake_openai, fake_anthropic, issuer, cloud) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("cloud")
    extra = cloud_config(tmp, issuer, cloud.url)
    yield from front_stack(request.param, tmp, fake_openai.url, fake_anthropic.url, extra)


# -- Anthropic on Vertex AI --------------------------------------------------------------------------
def test_vertex_anthropic_openai_sdk_text_and_usage(gw, cloud):
    cloud.script([{"path": VERTEX_PREFIX, "usage": {"input_tokens": 31, "output_tokens": 17}}])
    r = oai(gw).chat.completions.create(model="claude-vertex", messages=[{"role": "system", "content": "Be terse."}, *MSG],
                                        max_tokens=60)  # fmt: skip
    assert r.choices[0].message.content and r.choices[0].finish_reason == "stop"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (31, 17)
    body = vertex_body(cloud)
    assert body["system"] == "Be terse." and body["max_tokens"] == 60
    ledgered(gw, "claude-vertex", (31, 17))


def test_vertex_anthropic_openai_sdk_stream(gw, cloud):
    cloud.script([{"path": VERTEX_PREFIX, "usage": {"input_tokens": 12, "output_tokens": 9}}])
    chunks = list(oai(gw).chat.completions.create(model="claude-vertex", messages=MSG, stream=True,
                                                  stream_options={"include_usage": True}))  # fmt: skip
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (12, 9)
    assert vertex_body(cloud, stream=True)["stream"] is True
    ledgered(gw, "claude-vertex", (12, 9))


def test_vertex_anthropic_openai_sdk_tool_round_trip_and_image(gw, cloud):
    cloud.script(
        [{"path": VERTEX_PREFIX, "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}]
    )
    first = oai(gw).chat.completions.create(model="claude-vertex", messages=MSG, tools=TOOLS)
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls" and json.loads(call.function.arguments) == {
        "city": "Paris"
    }
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "And this?"},
                                     {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}}]},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude_none=True)]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]  # fmt: skip
    r = oai(gw).chat.completions.create(model="claude-vertex", messages=messages, tools=TOOLS)
    assert r.choices[0].message.content
    sent = vertex_body(cloud)["messages"]
    assert sent[0]["content"][1]["source"] == {"type": "base64", "media_type": "image/png", "data": PNG_B64}
    assert sent[1]["content"][0] == {
        "type": "tool_use",
        "id": call.id,
        "name": "get_weather",
        "input": {"city": "Paris"},
    }
    assert sent[2]["content"][0] == {"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}


def test_vertex_anthropic_anthropic_sdk_text_stream_tool_image(gw, cloud):
    c = ant(gw)
    cloud.script([{"path": VERTEX_PREFIX, "usage": {"input_tokens": 21, "output_tokens": 5}}])
    m = c.messages.create(model="claude-vertex", max_tokens=50, system="Be terse.", messages=MSG)
    assert m.content[0].text and (m.usage.input_tokens, m.usage.output_tokens) == (21, 5)
    assert vertex_body(cloud)["system"] == "Be terse."
    ledgered(gw, "claude-vertex", (21, 5))
    tools = [
        {"name": "get_weather", "description": "Weather", "input_schema": TOOLS[0]["function"]["parameters"]}
    ]
    cloud.script(
        [{"path": VERTEX_PREFIX, "tool_calls": [{"name": "get_weather", "arguments": {"city": "Lyon"}}]}]
    )
    with c.messages.stream(model="claude-vertex", max_tokens=100, messages=MSG, tools=tools) as s:
        final = s.get_final_message()
    tool = next(b for b in final.content if b.type == "tool_use")
    assert final.stop_reason == "tool_use" and tool.input == {"city": "Lyon"}
    assert vertex_body(cloud, stream=True)["tools"][0]["name"] == "get_weather"
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}}
    back = c.messages.create(model="claude-vertex", max_tokens=50, tools=tools, messages=[
        {"role": "user", "content": [{"type": "text", "text": "Weather here?"}, image]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": tool.id, "name": tool.name, "input": tool.input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool.id, "content": "rain"}]},
    ])  # fmt: skip
    assert back.content[0].text
    sent = vertex_body(cloud)["messages"]
    assert sent[0]["content"][1] == image and sent[2]["content"][0]["tool_use_id"] == tool.id


# -- Azure OpenAI with Entra ID ----------------------------------------------------------------------
def test_azure_entra_id_openai_sdk(gw, cloud, issuer):
    cloud.script([{"usage": {"prompt_tokens": 14, "completion_tokens": 6}}])
    r = oai(gw).chat.completions.create(model="gpt-azure", messages=MSG)
    assert r.choices[0].message.content and (r.usage.prompt_tokens, r.usage.completion_tokens) == (14, 6)
    rec = cloud.requests[-1]
    assert rec.path == "/openai/deployments/gpt-4o-deployment/chat/completions"
    assert rec.query == {"api-version": "2024-10-21"} and "api-key" not in rec.headers
    token = rec.headers["authorization"].removeprefix("Bearer ")
    assert (
        next(i for i in issuer.issued("azure-mi") if i.token == token).subject
        == "https://cognitiveservices.azure.com"
    )
    ledgered(gw, "gpt-azure", (14, 6))
    text = "".join(c.choices[0].delta.content or "" for c in oai(gw).chat.completions.create(
        model="gpt-azure", messages=MSG, stream=True) if c.choices)  # fmt: skip
    assert text and cloud.requests[-1].json["stream"] is True


# -- refresh, refusal, ADC, fallback ---------------------------------------------------------------------
def test_tokens_refreshed_under_way(gw, cloud, issuer):
    """Requests succeed across several refreshes; the provider sees the new tokens; an expired one
    is refused by the provider (a token that reached a client would be of no use for long)."""
    seen: dict[str, set[str]] = {
        m: set() for m in ("claude-vertex", "claude-adc", "gemini-vertex", "gpt-azure")
    }
    deadline = time.monotonic() + 2.5 * TOKEN_LIFE_S
    for i in range(200):
        enough = all(len(tokens) >= 3 for tokens in seen.values()) and issuer.expired("google-sa")
        if time.monotonic() > deadline or enough:  # (an expired token is refused: checked below)
            break
        for model in seen:
            r = oai(gw).chat.completions.create(
                model=model, messages=[{"role": "user", "content": f"tick {i}"}]
            )
            assert r.choices[0].message.content
            seen[model].add(cloud.requests[-1].headers["authorization"])
        time.sleep(0.5)
    assert all(len(tokens) >= 3 for tokens in seen.values()), {m: len(t) for m, t in seen.items()}
    expired = issuer.expired("google-sa")
    assert expired
    refused = httpx.post(cloud.url + VERTEX_PREFIX + "claude-sonnet-4-5:rawPredict", timeout=5,
                         headers={"authorization": f"Bearer {expired[0].token}"},
                         json={"anthropic_version": "vertex-2023-10-16", "max_tokens": 10, "messages": MSG})  # fmt: skip
    assert refused.status_code == 401 and refused.json()["error"]["status"] == "UNAUTHENTICATED"


def test_wrong_service_account_key_is_a_502_naming_no_secret(gw, cloud, issuer, tmp_path_factory):
    assert "signature" in issuer.refused  # the token endpoint refused the assertion
    with pytest.raises(openai.APIStatusError) as exc:
        oai(gw).chat.completions.create(model="claude-wrong-key", messages=MSG)
    assert exc.value.status_code == 502
    text = json.dumps(exc.value.body)
    assert "vertex-wrong-key" in text and "ya29." not in text and "PRIVATE KEY" not in text
    assert cloud.requests[-1].headers.get("authorization") is None  # sent without a token: 401
    with pytest.raises(anthropic.APIStatusError) as exc2:
        ant(gw).messages.create(model="claude-wrong-key", max_tokens=10, messages=MSG)
    assert exc2.value.status_code == 502 and exc2.value.body["type"] == "error"
    logs = gw.logs()
    assert "Invalid JWT Signature" in logs  # the failure is logged (with the SDK's reason) ...
    assert not any(i.token in logs for i in issuer.issued())  # ... and no token ever is
    assert "PRIVATE KEY" not in logs


def test_metadata_server_adc(gw, cloud, issuer):
    r = ant(gw).messages.create(model="claude-adc", max_tokens=20, messages=MSG)
    assert r.content[0].text
    token = cloud.requests[-1].headers["authorization"].removeprefix("Bearer ")
    assert any(i.token == token for i in issuer.issued("google-metadata"))
    vertex_body(cloud, model="claude-sonnet-4-5")


def test_vertex_429_falls_back_to_another_cloud(gw, cloud, fake_openai):
    cloud.script(
        [
            {
                "path": VERTEX_PREFIX,
                "status": 429,
                "error": "Quota exceeded for aiplatform.googleapis.com",
                "retry_after": 1,
            }
        ]
    )
    r = oai(gw).chat.completions.with_raw_response.create(model="claude-then-openai", messages=MSG)
    assert r.parse().choices[0].message.content
    assert r.headers["x-sidegate-provider"] == "openai" and r.headers["x-sidegate-attempts"] == "2"
    assert (
        cloud.requests[-1].path.endswith(":rawPredict")
        and fake_openai.requests[-1].json["model"] == "gpt-4o-mini"
    )


def test_token_echoed_by_the_provider_never_reaches_the_client(gw, cloud):
    """The current and the previous tokens are scrubbed from answers (an error echoing the token)."""
    oai(gw).chat.completions.create(model="claude-vertex", messages=MSG)
    token = cloud.requests[-1].headers["authorization"].removeprefix("Bearer ")
    cloud.script([{"path": VERTEX_PREFIX, "status": 400, "error": f"invalid header: Bearer {token}"}])
    with pytest.raises(openai.BadRequestError) as exc:
        oai(gw).chat.completions.create(model="claude-vertex", messages=MSG)
    text = json.dumps(exc.value.body)
    assert token not in text and "[redacted]" in text


def test_vertex_anthropic_count_tokens(gw, cloud):
    """Token counting on Vertex AI is one endpoint (`count-tokens:rawPredict`), the model in the body."""
    n = ant(gw).messages.count_tokens(model="claude-vertex", messages=MSG)
    assert n.input_tokens > 0
    rec = cloud.requests[-1]
    assert rec.path == VERTEX_PREFIX + "count-tokens:rawPredict"
    assert (
        rec.json["model"] == "claude-sonnet-4-5@20250929"
        and rec.json["anthropic_version"] == "vertex-2023-10-16"
    )
    assert rec.headers["authorization"].startswith("Bearer ya29.") and "anthropic-version" not in rec.headers


# -- Gemini on Vertex AI ---------------------------------------------------------------------------------
def _gemini_sent(cloud: FakeProviderThread, method: str = "generateContent") -> dict:
    rec = cloud.requests[-1]
    assert rec.path == GEMINI_PATH + method and rec.headers["authorization"].startswith("Bearer ya29.")
    assert "x-goog-api-key" not in rec.headers and "key" not in rec.query
    return rec.json


def test_vertex_gemini_openai_sdk_text_stream_and_usage(gw, cloud):
    cloud.script([{"usage": {"prompt_tokens": 11, "completion_tokens": 7}}])
    r = oai(gw).chat.completions.create(
        model="gemini-vertex", messages=[{"role": "system", "content": "Be terse."}, *MSG]
    )
    assert r.choices[0].message.content == "Echo: What is the weather in Paris?"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (11, 7)
    sent = _gemini_sent(cloud)
    assert sent["systemInstruction"]["parts"][0]["text"] == "Be terse." and "model" not in sent
    ledgered(gw, "gemini-vertex", (11, 7))
    cloud.script([{"usage": {"prompt_tokens": 13, "completion_tokens": 4}}])
    chunks = list(oai(gw).chat.completions.create(model="gemini-vertex", messages=MSG, stream=True,
                                                  stream_options={"include_usage": True}))  # fmt: skip
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        == "Echo: What is the weather in Paris?"
    )
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (13, 4)
    _gemini_sent(cloud, "streamGenerateContent")
    assert cloud.requests[-1].query == {"alt": "sse"}
    ledgered(gw, "gemini-vertex", (13, 4))


def test_vertex_gemini_openai_sdk_tool_round_trip(gw, cloud):
    cloud.script([{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}])
    r = oai(gw).chat.completions.create(model="gemini-vertex", messages=MSG, tools=TOOLS)
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls" and json.loads(call.function.arguments) == {
        "city": "Paris"
    }
    assert _gemini_sent(cloud)["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"
    messages = [*MSG, {"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude_none=True)]},
                {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]  # fmt: skip
    r2 = oai(gw).chat.completions.create(model="gemini-vertex", messages=messages, tools=TOOLS)
    assert r2.choices[0].message.content == "Echo: sunny"  # the fake checked the call/response pairing
    contents = _gemini_sent(cloud)["contents"]
    assert contents[1]["parts"][0]["functionCall"]["name"] == "get_weather"
    assert contents[2]["parts"][0]["functionResponse"]["name"] == "get_weather"


def test_vertex_gemini_anthropic_sdk_stream(gw, cloud):
    with ant(gw).messages.stream(model="gemini-vertex", max_tokens=50, messages=MSG) as s:
        final = s.get_final_message()
    assert final.content[0].text == "Echo: What is the weather in Paris?" and final.usage.output_tokens > 0
    _gemini_sent(cloud, "streamGenerateContent")


def test_azure_503_falls_back_to_vertex(gw, cloud):
    """Entra ID on the first try, a Google token on the next: each try gets its own provider's."""
    cloud.script(
        [{"path": "/openai/deployments/", "status": 503, "error": "The service is temporarily unavailable."}]
    )
    r = ant(gw).messages.with_raw_response.create(model="azure-then-vertex", max_tokens=50, messages=MSG)
    assert r.parse().content[0].text
    assert r.headers["x-sidegate-provider"] == "vertex" and r.headers["x-sidegate-attempts"] == "2"
    azure_try, vertex_try = cloud.requests[-2:]
    assert azure_try.path.startswith("/openai/deployments/gpt-4o-deployment/")
    assert azure_try.headers["authorization"].startswith("Bearer eyJ")
    assert vertex_try.path == VERTEX_PREFIX + "claude-sonnet-4-5:rawPredict"
    assert vertex_try.headers["authorization"].startswith("Bearer ya29.")
