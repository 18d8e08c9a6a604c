"""Gemini API clients (google-genai) through a real Envoy on both fronts: `models/{model}:generateContent`,
`:streamGenerateContent?alt=sse` and `:countTokens`, `GET /v1beta/models`, the key in `x-goog-api-key`
or `?key=`, and every refusal in Google's format (`{"error": {"code", "message", "status"}}`)."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from gemini_helpers import GEMINI_KEY, PNG_B64, gemini_fake, settled
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from harness import FRONT_SERVICES, Stack, front_stack

from sidegate import keys
from sidegate.fakes import FakeProviderThread

pytestmark = pytest.mark.e2e
LIMIT = 64 * 1024
HELLO = {"contents": [{"role": "user", "parts": [{"text": "Say hi"}]}]}
METERED_KEY, METERED_ID = keys.new_key()
"""A tenant one test uses alone: the quota's window holds that test's tokens only."""
PROVIDERS = ["gpt-4o-mini", "claude-haiku", "gemini-flash"]  # translated twice, then passthrough
EMAIL = "jane.doe@example.com"


def _extra(gemini_url: str) -> dict[str, Any]:
    return {
        "listener": {"max_request_bytes": LIMIT},
        "providers": {"gemini": {"api": "gemini", "base_url": gemini_url, "api_key_env": "E2E_GEMINI_KEY"}},
        "models": {
            "gemini-flash": {"routes": [{"provider": "gemini", "model": "gemini-2.0-flash"}]},
            "cached": {"routes": [{"provider": "openai", "model": "gpt-4o-mini"}], "cache": {"exact": True}, "guard": None},
        },
        "tenants": {"gem-in-metered": {"keys": [{"id": METERED_ID, "hash": keys.hash_key(METERED_KEY), "models": ["*"]}],
                                       "quota": {"limits": {"tpm": 10_000_000}}}},
        "env": {"E2E_GEMINI_KEY": GEMINI_KEY},
    }  # fmt: skip


@pytest.fixture(scope="module")
def fake_gemini() -> Iterator[FakeProviderThread]:
    yield from gemini_fake()


@pytest.fixture(autouse=True)
def _clean_gemini(fake_gemini: FakeProviderThread) -> None:
    fake_gemini.reset()


@pytest.fixture(scope="module", params=sorted(FRONT_SERVICES))
def gw(request, tmp_path_factory, fake_openai, fake_anthropic, fake_gemini) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("stack")
    yield from front_stack(request.param, workdir, fake_openai.url, fake_anthropic.url, _extra(fake_gemini.url))


def _client(gw: Stack, key: str | None = None, version: str | None = None) -> genai.Client:
    """google-genai pointed at the gateway (given a base_url it speaks api_version v1 unless told)."""
    options = types.HttpOptions(base_url=gw.base_url, api_version=version)
    return genai.Client(api_key=key or gw.keys["acme"].key, http_options=options)


def _google_error(r: httpx.Response, code: int, status: str) -> str:
    """The message of a Google-format error answer (asserting its shape)."""
    assert r.status_code == code, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert (err["code"], err["status"]) == (code, status) and set(err) == {"code", "message", "status"}, err
    return str(err["message"])


# -- no provider needed: auth, paths, parse, limits, the model list and token counts ---------------


def test_missing_and_wrong_keys_get_google_401s(gw: Stack, fake_openai, fake_anthropic) -> None:
    path = "/v1beta/models/gpt-4o-mini:generateContent"
    with httpx.Client(base_url=gw.base_url, timeout=10) as c:
        msg = _google_error(c.post(path, json=HELLO), 401, "UNAUTHENTICATED")
        assert "x-goog-api-key" in msg and "key" in msg
        _google_error(c.post(path, json=HELLO, headers={"x-goog-api-key": "sgk_nope"}), 401, "UNAUTHENTICATED")
        _google_error(c.post(path + "?key=sgk_nope", json=HELLO), 401, "UNAUTHENTICATED")
        revoked = gw.keys["acme-revoked"].key
        _google_error(c.post(path, json=HELLO, params={"key": revoked}), 401, "UNAUTHENTICATED")
        # a `key` parameter counts on Google's paths only: an OpenAI client's path takes headers
        r = c.post("/v1/chat/completions", params={"key": gw.keys["acme"].key},
                   json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    wrong = _client(gw, "sgk_nope")  # (kept in a name: a Client closes its connections when collected)
    with pytest.raises(genai_errors.ClientError) as err:
        wrong.models.generate_content(model="gpt-4o-mini", contents="hi")
    assert err.value.code == 401 and err.value.status == "UNAUTHENTICATED"
    assert fake_openai.requests == [] and fake_anthropic.requests == []


def test_unserved_gemini_paths_get_google_404s(gw: Stack) -> None:
    h = {"x-goog-api-key": gw.keys["acme"].key}
    with httpx.Client(base_url=gw.base_url, timeout=10, headers=h) as c:
        for path in ("/v1beta/models/gpt-4o-mini:embedContent", "/v1beta/models/gpt-4o-mini:batchEmbedContents",
                     "/v1beta/files", "/v1beta/cachedContents", "/v1/models/gpt-4o-mini:predict"):  # fmt: skip
            msg = _google_error(c.post(path, json=HELLO), 404, "NOT_FOUND")
            assert "generateContent" in msg, msg  # it says what is served
    client = _client(gw)
    with pytest.raises(genai_errors.ClientError) as err:
        client.models.embed_content(model="gpt-4o-mini", contents="hi")
    assert err.value.code == 404 and err.value.status == "NOT_FOUND"


def test_bad_bodies_get_google_400s(gw: Stack, fake_openai) -> None:
    h = {"x-goog-api-key": gw.keys["acme"].key}
    path = "/v1beta/models/gpt-4o-mini:generateContent"
    with httpx.Client(base_url=gw.base_url, timeout=10, headers=h) as c:
        assert "contents" in _google_error(c.post(path, json={}), 400, "INVALID_ARGUMENT")
        assert "contents" in _google_error(c.post(path, json={"contents": "hi"}), 400, "INVALID_ARGUMENT")
        msg = _google_error(c.post(path, json={"contents": [{"role": "user", "parts": "hi"}]}), 400, "INVALID_ARGUMENT")
        assert "contents[0].parts" in msg
        bad = {**HELLO, "generationConfig": [1]}
        assert "generationConfig" in _google_error(c.post(path, json=bad), 400, "INVALID_ARGUMENT")
        _google_error(c.post(path, content=b"{nope", headers={"content-type": "application/json"}), 400, "INVALID_ARGUMENT")
        # Google's other stream framing (one JSON array) is not served: SSE only, said plainly
        msg = _google_error(c.post("/v1beta/models/gpt-4o-mini:streamGenerateContent", json=HELLO), 400, "INVALID_ARGUMENT")
        assert "alt=sse" in msg
    assert fake_openai.requests == []


def test_unknown_model_is_a_google_404(gw: Stack, fake_openai) -> None:
    client = _client(gw)
    with pytest.raises(genai_errors.ClientError) as err:
        client.models.generate_content(model="gemini-nope", contents="hi")
    assert err.value.code == 404 and err.value.status == "NOT_FOUND" and "gemini-nope" in err.value.message
    limited = _client(gw, gw.keys["acme-limited"].key)
    with pytest.raises(genai_errors.ClientError) as err:
        limited.models.generate_content(model="gpt-4o", contents="hi")
    assert err.value.code == 403 and err.value.status == "PERMISSION_DENIED"
    assert fake_openai.requests == []


def test_too_large_bodies_get_google_413s(gw: Stack, fake_openai) -> None:
    """Both 413s: a declared length over the limit (the too-large route, answered from the head)
    and a chunked body that outgrows it (Envoy's buffer), each in Google's format."""
    big = {"contents": [{"role": "user", "parts": [{"text": "x" * (LIMIT + 10)}]}]}
    h = {"x-goog-api-key": gw.keys["acme"].key}
    with httpx.Client(base_url=gw.base_url, timeout=10, headers=h) as c:
        for path in ("/v1beta/models/gpt-4o-mini:generateContent", "/v1/models/gpt-4o-mini:generateContent"):
            _google_error(c.post(path, json=big), 413, "INVALID_ARGUMENT")

            def chunks() -> Iterator[bytes]:
                yield b'{"contents": [{"parts": [{"text": "'
                yield b"x" * (LIMIT + 10)
                yield b'"}]}]}'

            _google_error(c.post(path, content=chunks(), headers={"content-type": "application/json"}), 413, "INVALID_ARGUMENT")
    assert fake_openai.requests == []


def test_the_sdk_lists_and_gets_the_models_its_key_may_use(gw: Stack, fake_openai, fake_anthropic) -> None:
    client, limited = _client(gw), _client(gw, gw.keys["acme-limited"].key)
    names = [m.name for m in client.models.list()]
    assert names == [f"models/{n}" for n in ("cached", "claude-haiku", "gemini-flash", "gpt-4o", "gpt-4o-mini")]
    beta = _client(gw, version="v1beta")  # (either version)
    page = beta.models.list(config={"page_size": 2})
    assert [m.name for m in page.page] == names[:2]
    assert [m.name for m in page] == names  # the SDK pages on with nextPageToken
    assert [m.name for m in limited.models.list()] == ["models/gpt-4o-mini"]
    one = client.models.get(model="gpt-4o")
    assert one.name == "models/gpt-4o" and "generateContent" in (one.supported_actions or [])
    with pytest.raises(genai_errors.ClientError) as err:
        limited.models.get(model="gpt-4o")
    assert err.value.code == 404
    assert fake_openai.requests == [] and fake_anthropic.requests == []


def test_count_tokens_is_the_gateways_estimate(gw: Stack, fake_openai) -> None:
    client = _client(gw)
    short = client.models.count_tokens(model="gpt-4o-mini", contents="hi")
    long = client.models.count_tokens(model="gpt-4o-mini", contents="hello there, " * 50)
    assert 0 < short.total_tokens < long.total_tokens
    with httpx.Client(base_url=gw.base_url, timeout=10) as c:  # the key as a query parameter
        r = c.post("/v1beta/models/gpt-4o-mini:countTokens", params={"key": gw.keys["acme"].key}, json=HELLO)
        assert r.status_code == 200 and r.headers["x-sidegate-token-count"] == "estimate"
        assert r.json()["totalTokens"] > 0
    assert fake_openai.requests == []


def test_a_query_key_is_never_logged(gw: Stack) -> None:
    key = gw.keys["globex"].key
    with httpx.Client(base_url=gw.base_url, timeout=10) as c:
        r = c.post("/v1beta/models/gpt-4o-mini:countTokens", params={"key": key, "x": "1"}, json=HELLO)
        assert r.status_code == 200
        r = c.post("/v1beta/models/gpt-4o-mini:countTokens", params={"key": key + "x"}, json=HELLO)
        assert r.status_code == 401
    deadline = time.monotonic() + 10  # (Envoy writes its access log in batches)
    while (logs := gw.logs()).count("gpt-4o-mini:countTokens") < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert logs.count("gpt-4o-mini:countTokens") >= 2  # the access log has both paths...
    assert key not in logs  # ...without the key, whether it was good or not




# -- through a provider: translated to OpenAI and Anthropic providers, passed through to Gemini ---


def _fake(model: str, fake_openai, fake_anthropic, fake_gemini) -> FakeProviderThread:
    return {"gpt-4o-mini": fake_openai, "claude-haiku": fake_anthropic, "gemini-flash": fake_gemini}[model]


def _sent(model: str, fake: FakeProviderThread) -> dict[str, Any]:
    """The last body the provider received, on its own API's path with its own key."""
    rec = fake.requests[-1]
    if model == "gemini-flash":
        assert rec.path.startswith("/v1beta/models/gemini-2.0-flash:") and rec.headers["x-goog-api-key"] == GEMINI_KEY
        assert rec.query.get("key") is None
    else:
        assert rec.path == ("/v1/chat/completions" if model == "gpt-4o-mini" else "/v1/messages")
        assert "x-goog-api-key" not in rec.headers
    return rec.json


@pytest.mark.parametrize("model", PROVIDERS)
def test_text_and_stream_with_a_system_instruction(gw: Stack, model, fake_openai, fake_anthropic, fake_gemini) -> None:
    fake = _fake(model, fake_openai, fake_anthropic, fake_gemini)
    client = _client(gw)
    config = types.GenerateContentConfig(system_instruction="Be terse.", max_output_tokens=64)
    r = client.models.generate_content(model=model, contents="What is the weather in Paris?", config=config)
    assert r.text == "Echo: What is the weather in Paris?"
    assert r.candidates[0].finish_reason == types.FinishReason.STOP
    u = r.usage_metadata
    assert u.prompt_token_count > 0 and u.candidates_token_count > 0
    assert u.total_token_count == u.prompt_token_count + u.candidates_token_count
    sent = _sent(model, fake)
    system = {"gpt-4o-mini": lambda b: b["messages"][0]["content"], "claude-haiku": lambda b: str(b["system"]),
              "gemini-flash": lambda b: b["systemInstruction"]["parts"][0]["text"]}[model](sent)  # fmt: skip
    assert "Be terse." in system
    beta = _client(gw, version="v1beta")
    chunks = list(beta.models.generate_content_stream(model=model, contents="What is the weather in Paris?", config=config))
    assert len(chunks) > 1 and "".join(c.text or "" for c in chunks) == r.text
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata.candidates_token_count == u.candidates_token_count
    _sent(model, fake)


@pytest.mark.parametrize("model", PROVIDERS)
def test_tool_round_trip(gw: Stack, model, fake_openai, fake_anthropic, fake_gemini) -> None:
    fake = _fake(model, fake_openai, fake_anthropic, fake_gemini)
    fake.script([{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}])
    decl = types.FunctionDeclaration(name="get_weather", description="Weather for a city", parameters_json_schema={
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})  # fmt: skip
    config = types.GenerateContentConfig(tools=[types.Tool(function_declarations=[decl])])
    ask = types.Content(role="user", parts=[types.Part.from_text(text="Weather in Paris?")])
    client = _client(gw)
    r = client.models.generate_content(model=model, contents=[ask], config=config)
    (call,) = r.function_calls
    assert call.name == "get_weather" and call.args == {"city": "Paris"}
    answer = types.Part.from_function_response(name="get_weather", response={"result": "sunny"})
    contents = [ask, r.candidates[0].content, types.Content(role="user", parts=[answer])]
    r2 = client.models.generate_content(model=model, contents=contents, config=config)
    assert r2.text and "sunny" in r2.text  # the fakes echo the tool's answer
    sent = _sent(model, fake)
    if model == "gpt-4o-mini":
        assert sent["messages"][1]["tool_calls"][0]["function"]["name"] == "get_weather"
        assert sent["messages"][2]["role"] == "tool" and "sunny" in sent["messages"][2]["content"]
    elif model == "claude-haiku":
        assert sent["messages"][1]["content"][0]["type"] == "tool_use"
        assert sent["messages"][2]["content"][0]["type"] == "tool_result"
    else:
        assert sent["contents"][1]["parts"][0]["functionCall"]["name"] == "get_weather"
        assert sent["contents"][2]["parts"][0]["functionResponse"]["response"] == {"result": "sunny"}


@pytest.mark.parametrize("model", PROVIDERS)
def test_an_image(gw: Stack, model, fake_openai, fake_anthropic, fake_gemini) -> None:
    """An inline image in the REST API's camelCase (google-genai itself sends the Blob's fields in
    snake_case, `mime_type`, with URL-safe base64: the codec does not read that spelling yet, so
    the SDK's own image is sent to the passthrough only)."""
    fake = _fake(model, fake_openai, fake_anthropic, fake_gemini)
    image = {"inlineData": {"mimeType": "image/png", "data": PNG_B64}}
    body = {"contents": [{"role": "user", "parts": [image, {"text": "What is this?"}]}]}
    with httpx.Client(base_url=gw.base_url, timeout=20, headers={"x-goog-api-key": gw.keys["acme"].key}) as c:
        r = c.post(f"/v1beta/models/{model}:generateContent", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["candidates"][0]["content"]["parts"][0]["text"] == "Echo: What is this?"
    assert PNG_B64 in orjson.dumps(_sent(model, fake)).decode()
    if model == "gemini-flash":
        png = base64.b64decode(PNG_B64)
        client = _client(gw)
        r2 = client.models.generate_content(model=model, contents=[types.Part.from_bytes(data=png, mime_type="image/png"), "And this?"])
        assert r2.text == "Echo: And this?"
        (blob,) = [p["inlineData"] for p in _sent(model, fake)["contents"][0]["parts"] if "inlineData" in p]
        assert base64.urlsafe_b64decode(blob["data"]) == png


@pytest.mark.parametrize("model", PROVIDERS)
def test_json_schema_output(gw: Stack, model, fake_openai, fake_anthropic, fake_gemini) -> None:
    fake = _fake(model, fake_openai, fake_anthropic, fake_gemini)
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "temp": {"type": "number"}}, "required": ["city", "temp"]}
    config = types.GenerateContentConfig(response_mime_type="application/json", response_json_schema=schema)
    client = _client(gw)
    r = client.models.generate_content(model=model, contents="Weather in Paris as JSON", config=config)
    assert set(orjson.loads(r.text)) >= {"city", "temp"}
    assert '"temp"' in orjson.dumps(_sent(model, fake)).decode()  # the schema reached the provider in its own form


def test_the_key_as_a_query_parameter_never_reaches_a_provider(gw: Stack, fake_openai, fake_anthropic, fake_gemini) -> None:
    key = gw.keys["globex"].key
    with httpx.Client(base_url=gw.base_url, timeout=20) as c:
        for model in PROVIDERS:
            r = c.post(f"/v1beta/models/{model}:generateContent", params={"key": key}, json=HELLO)
            assert r.status_code == 200, r.text
            assert r.json()["candidates"][0]["content"]["parts"][0]["text"] == "Echo: Say hi"
            r = c.post(f"/v1beta/models/{model}:streamGenerateContent", params={"alt": "sse", "key": key}, json=HELLO)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            chunks = [orjson.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
            assert "".join(p["text"] for ch in chunks for p in ch["candidates"][0]["content"]["parts"]) == "Echo: Say hi"
    seen = [rec for fake in (fake_openai, fake_anthropic, fake_gemini) for rec in fake.requests]
    assert len(seen) == 6
    for rec in seen:
        assert key not in orjson.dumps(rec.to_dict()).decode()  # path, query, headers, body
    assert all(rec.query.get("alt") == "sse" for rec in fake_gemini.requests if "stream" in rec.path)


@pytest.mark.parametrize("stream", [False, True])
def test_quota_is_charged_the_answers_usage(gw: Stack, fake_openai, stream: bool) -> None:
    fake_openai.script([{"usage": {"prompt_tokens": 11, "completion_tokens": 7}}])
    before = settled(gw, "gem-in-metered")
    client = _client(gw, METERED_KEY)
    if stream:
        (*_, last) = client.models.generate_content_stream(model="gpt-4o-mini", contents="count me")
        u = last.usage_metadata
    else:
        u = client.models.generate_content(model="gpt-4o-mini", contents="count me").usage_metadata
    assert (u.prompt_token_count, u.candidates_token_count, u.total_token_count) == (11, 7, 18)
    assert settled(gw, "gem-in-metered") - before == 18


def test_an_exact_cache_hit(gw: Stack, fake_openai) -> None:
    question = {"contents": [{"role": "user", "parts": [{"text": f"Cache me {time.time_ns()}"}]}]}
    h = {"x-goog-api-key": gw.keys["acme"].key}
    with httpx.Client(base_url=gw.base_url, timeout=20, headers=h) as c:
        first = c.post("/v1/models/cached:generateContent", json=question)
        assert first.status_code == 200 and not first.headers.get("x-sidegate-cache", "").startswith("hit")
        n = len(fake_openai.requests)
        deadline = time.monotonic() + 10  # (fills are asynchronous)
        while time.monotonic() < deadline:
            hit = c.post("/v1beta/models/cached:generateContent", json=question)
            if hit.headers.get("x-sidegate-cache") == "hit-exact":
                break
            time.sleep(0.1)
        assert hit.headers.get("x-sidegate-cache") == "hit-exact"
        want, got = first.json(), hit.json()
        assert got["candidates"] == want["candidates"] and got["usageMetadata"] == want["usageMetadata"]
        assert got["responseId"] != want.get("responseId")  # a hit is a new answer
        streamed = c.post("/v1beta/models/cached:streamGenerateContent?alt=sse", json=question)
        assert streamed.headers.get("x-sidegate-cache") == "hit-exact"
    hits = len([r for r in fake_openai.requests[n:]])
    chunks = [orjson.loads(line[6:]) for line in streamed.text.splitlines() if line.startswith("data: ")]
    assert "".join(p["text"] for ch in chunks for p in ch["candidates"][0]["content"]["parts"]) == want["candidates"][0]["content"]["parts"][0]["text"]
    assert hits <= 3  # only the misses while the fill was on its way reached the provider


@pytest.mark.parametrize("model", PROVIDERS)
def test_the_guard_redacts_pii_for_the_provider_and_restores_it(gw: Stack, model, fake_openai, fake_anthropic, fake_gemini) -> None:
    fake = _fake(model, fake_openai, fake_anthropic, fake_gemini)
    client = _client(gw)
    ask = f"My email is {EMAIL}. Repeat it."
    r = client.models.generate_content(model=model, contents=ask)
    sent = orjson.dumps(_sent(model, fake)).decode()
    assert EMAIL not in sent and "<EMAIL_1>" in sent
    assert r.text == f"Echo: {ask}"
    text = "".join(c.text or "" for c in client.models.generate_content_stream(model=model, contents=ask))
    assert text == f"Echo: {ask}"
    assert EMAIL not in orjson.dumps(_sent(model, fake)).decode()


@pytest.fixture(scope="module")
def inline(tmp_path_factory, fake_openai, fake_anthropic, fake_gemini) -> Iterator[Stack]:
    """The third arrangement: inline auth behind the ext_proc front (the gateway rewrites `:path`)."""
    extra = _extra(fake_gemini.url)
    extra["services"] = {"auth": "inline", "front": "ext_proc"}
    s = Stack(tmp_path_factory.mktemp("inline"), fake_openai.url, fake_anthropic.url, extra=extra)
    s.start()
    yield s
    s.stop()


def test_inline_auth_behind_the_ext_proc_front_takes_and_drops_the_query_key(inline: Stack, fake_gemini) -> None:
    key = inline.keys["acme"].key
    with httpx.Client(base_url=inline.base_url, timeout=20) as c:
        _google_error(c.post("/v1beta/models/gemini-flash:generateContent?key=sgk_nope", json=HELLO), 401, "UNAUTHENTICATED")
        r = c.post("/v1beta/models/gemini-flash:streamGenerateContent", params={"key": key, "alt": "sse"}, json=HELLO)
        assert r.status_code == 200 and "Echo" in r.text
        r = c.get("/v1/models", params={"key": key})  # a Gemini client's list (no SDK header, the key told)
        assert r.status_code == 200 and "models/gemini-flash" in [m["name"] for m in r.json()["models"]]
    (rec,) = fake_gemini.requests
    assert key not in orjson.dumps(rec.to_dict()).decode() and rec.query == {"alt": "sse"}
    deadline = time.monotonic() + 10  # (Envoy writes its access log in batches)
    while "streamGenerateContent" not in (logs := inline.logs()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "streamGenerateContent" in logs and key not in logs
