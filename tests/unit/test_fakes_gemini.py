"""The Gemini fake (Gemini API and Vertex AI paths), driven by the official `google-genai` SDK and by
raw HTTP where the SDK would not send the body."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import orjson
import pytest
from google import genai
from google.genai import errors, types
from pydantic import BaseModel

from sidegate.fakes import FakeProviderThread
from sidegate.fakes.wire_gemini import parse_path

KEY = "gk-test"
MODEL = "gemini-2.0-flash"
GEN = f"/v1beta/models/{MODEL}:generateContent"
VERTEX = f"/v1/projects/p1/locations/us-central1/publishers/google/models/{MODEL}:generateContent"
HELLO = {"contents": [{"role": "user", "parts": [{"text": "hello there"}]}]}
TOOLS = [{"functionDeclarations": [{"name": "get_weather", "parameters": {
    "type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]}}]}]  # fmt: skip


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviderThread]:
    with FakeProviderThread(chunks=3, api_key=KEY) as fp:
        yield fp


@pytest.fixture(autouse=True)
def _clean(fake: FakeProviderThread) -> None:
    fake.reset()


def sdk(fake: FakeProviderThread, key: str = KEY) -> genai.Client:
    return genai.Client(api_key=key, http_options=types.HttpOptions(base_url=fake.url))


def post(fake: FakeProviderThread, path: str, body: object, **headers: str) -> httpx.Response:
    hdrs = {"x-goog-api-key": KEY, **{k.replace("_", "-"): v for k, v in headers.items()}}
    return httpx.post(fake.url + path, content=orjson.dumps(body), headers=hdrs, timeout=5)


def test_paths() -> None:
    assert parse_path(GEN).endpoint == "gemini_generate"  # type: ignore[union-attr]
    call = parse_path(VERTEX.replace("generateContent", "streamGenerateContent"))
    assert call is not None and call.vertex and call.model == MODEL and call.endpoint == "gemini_stream"
    assert parse_path("/v1/projects/p/locations/l/publishers/anthropic/models/c:rawPredict") is None
    assert parse_path("/v1/chat/completions") is None
    assert parse_path("/v1beta/models/:generateContent") is None


def test_text_stream_usage(fake: FakeProviderThread) -> None:
    client = sdk(fake)
    config = types.GenerateContentConfig(system_instruction="be brief", max_output_tokens=50, temperature=0.2)
    r = client.models.generate_content(model=MODEL, contents="hello world", config=config)
    assert r.text == "Echo: hello world"
    assert r.candidates[0].finish_reason == types.FinishReason.STOP  # type: ignore[index]
    u = r.usage_metadata
    assert u is not None and (u.prompt_token_count, u.candidates_token_count, u.total_token_count) == (
        4,
        3,
        7,
    )
    chunks = list(client.models.generate_content_stream(model=MODEL, contents="one two three four"))
    assert "".join(c.text or "" for c in chunks) == "Echo: one two three four"
    assert len(chunks) == 3 and chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP  # type: ignore[index]
    assert chunks[0].usage_metadata.candidates_token_count is None  # type: ignore[union-attr]
    assert chunks[-1].usage_metadata.candidates_token_count == 5  # type: ignore[union-attr]
    assert fake.requests[-1].query == {"alt": "sse"} and fake.requests[-1].route == "gemini_stream"


def test_stream_events_end_with_crlf_and_json_array_without_sse(fake: FakeProviderThread) -> None:
    r = post(fake, GEN.replace("generateContent", "streamGenerateContent?alt=sse"), HELLO)
    assert r.headers["content-type"].startswith("text/event-stream")
    events = r.content.split(b"\r\n\r\n")
    assert events[-1] == b"" and all(e.startswith(b"data: {") for e in events[:-1])
    assert orjson.loads(events[-2][6:])["usageMetadata"]["candidatesTokenCount"] == 3
    r = post(fake, GEN.replace("generateContent", "streamGenerateContent"), HELLO)
    assert r.headers["content-type"].startswith("application/json") and len(r.json()) == 3


def test_tool_round_trip_with_the_sdk_calling_the_function(fake: FakeProviderThread) -> None:
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    fake.script([{"tool_calls": "auto"}])
    config = types.GenerateContentConfig(tools=[get_weather])
    client = sdk(fake)  # held: a client left to the garbage collector closes its connection pool
    r = client.models.generate_content(model=MODEL, contents="weather?", config=config)
    assert r.text == "Echo: sunny in city-value"  # the function's result, echoed on the second turn
    second = fake.requests[-1].json
    assert second["contents"][1]["parts"][0]["functionCall"]["name"] == "get_weather"


def test_function_response_must_answer_the_call_turn(fake: FakeProviderThread) -> None:
    call = {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "x"}}}]}
    answer = {
        "role": "user",
        "parts": [{"functionResponse": {"name": "get_weather", "response": {"r": "ok"}}}],
    }
    user = HELLO["contents"][0]
    assert post(fake, GEN, {"contents": [user, call, answer], "tools": TOOLS}).json()["candidates"][0][
        "content"
    ]["parts"] == [{"text": "Echo: ok"}]
    for contents, words in (
        ([user, answer], "immediately after a function call turn"),
        ([user, call, {**answer, "parts": answer["parts"] * 2}], "number of function response parts"),
        (
            [
                user,
                call,
                {"role": "user", "parts": [{"functionResponse": {"name": "other", "response": {}}}]},
            ],
            "by name",
        ),
        ([user, {"role": "model", "parts": [{"text": "hm"}]}, call], "after a user turn"),
    ):
        r = post(fake, GEN, {"contents": contents, "tools": TOOLS})
        assert r.status_code == 400 and words in r.json()["error"]["message"], contents


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({**HELLO, "temperature": 1}, 'Unknown name "temperature"'),
        ({"contents": [{"parts": [{"text": "x", "bad": 1}]}]}, "at 'contents[0].parts[0]'"),
        ({**HELLO, "generationConfig": {"maxOutputTokens": "many"}}, "generationConfig.maxOutputTokens"),
        ({"contents": []}, "contents is not specified"),
        ({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}, "valid role"),
        ({**HELLO, "labels": {"team": "a"}}, 'Unknown name "labels"'),  # Vertex only
    ],
)
def test_bad_bodies_get_googles_400(fake: FakeProviderThread, body: dict[str, object], words: str) -> None:
    r = post(fake, GEN, body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["status"] == "INVALID_ARGUMENT" and err["code"] == 400 and words in err["message"]


def test_keys(fake: FakeProviderThread) -> None:
    client = sdk(fake, "wrong")
    with pytest.raises(errors.ClientError) as bad:
        client.models.generate_content(model=MODEL, contents="x")
    assert bad.value.code == 400 and "API key not valid" in str(bad.value)
    assert bad.value.details["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    assert httpx.post(fake.url + GEN, json=HELLO).status_code == 403
    assert httpx.post(fake.url + GEN + f"?key={KEY}", json=HELLO).status_code == 200
    assert post(fake, VERTEX, HELLO).status_code == 401  # Vertex takes a bearer token, not the key
    r = httpx.post(
        fake.url + VERTEX, json={**HELLO, "labels": {"a": "b"}}, headers={"authorization": f"Bearer {KEY}"}
    )
    assert (
        r.status_code == 200
        and r.json()["candidates"][0]["content"]["parts"][0]["text"] == "Echo: hello there"
    )


def test_scripted_errors_and_faults(fake: FakeProviderThread) -> None:
    fake.script([{"status": 429, "retry_after": 7}, {"status": 503}, {"garbage": True}])
    r = post(fake, GEN, HELLO)
    assert r.status_code == 429 and r.headers["retry-after"] == "7"
    assert r.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert r.json()["error"]["details"][0]["retryDelay"] == "7s"
    client = sdk(fake)
    with pytest.raises(errors.ServerError) as e:
        client.models.generate_content(model=MODEL, contents="x")
    assert e.value.code == 503 and e.value.status == "UNAVAILABLE"
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(post(fake, GEN, HELLO).content)
    fake.script([{"stream_error": {"after": 1, "code": 503, "message": "overloaded"}}])
    r = post(fake, GEN.replace("generateContent", "streamGenerateContent?alt=sse"), HELLO)
    last = r.content.split(b"\r\n\r\n")[-2]
    assert orjson.loads(last[6:])["error"]["status"] == "UNAVAILABLE"


def test_safety_finish_and_prompt_block(fake: FakeProviderThread) -> None:
    fake.script([{"finish_reason": "SAFETY"}, {"finish_reason": "prompt:SAFETY"}])
    client = sdk(fake)
    r = client.models.generate_content(model=MODEL, contents="x")
    cand = r.candidates[0]  # type: ignore[index]
    assert cand.finish_reason == types.FinishReason.SAFETY and cand.content is None
    assert r.usage_metadata.candidates_token_count is None  # type: ignore[union-attr]
    r = client.models.generate_content(model=MODEL, contents="x")
    assert not r.candidates and r.prompt_feedback.block_reason == types.BlockedReason.SAFETY  # type: ignore[union-attr]


def test_structured_output_image_and_usage_script(fake: FakeProviderThread) -> None:
    class City(BaseModel):
        name: str
        population: int

    config = types.GenerateContentConfig(response_mime_type="application/json", response_schema=City)
    client = sdk(fake)
    r = client.models.generate_content(model=MODEL, contents="a city", config=config)
    assert isinstance(r.parsed, City)
    image = types.Part.from_bytes(data=b"\x89PNG\r\n\x1a\n", mime_type="image/png")
    fake.script([{"usage": {"prompt_tokens": 100, "completion_tokens": 20, "reasoning_tokens": 5}}])
    r = client.models.generate_content(model=MODEL, contents=[image, "what is this"])
    assert r.text == "Echo: what is this"
    u = r.usage_metadata
    assert u is not None and (u.prompt_token_count, u.candidates_token_count, u.thoughts_token_count) == (
        100,
        20,
        5,
    )
    assert u.total_token_count == 125


def test_embeddings_and_count_tokens(fake: FakeProviderThread) -> None:
    client = sdk(fake)
    config = types.EmbedContentConfig(output_dimensionality=8)
    e = client.models.embed_content(model="text-embedding-004", contents=["a", "b c"], config=config)
    assert [len(x.values or []) for x in e.embeddings or []] == [8, 8]
    assert fake.requests[-1].route == "gemini_batch_embed"
    one = post(
        fake, "/v1beta/models/text-embedding-004:embedContent", {"content": {"parts": [{"text": "a"}]}}
    )
    assert len(one.json()["embedding"]["values"]) == 768
    small = post(
        fake,
        "/v1beta/models/text-embedding-004:embedContent",
        {"content": {"parts": [{"text": "a"}]}, "outputDimensionality": 8},
    )
    assert small.json()["embedding"]["values"] == e.embeddings[0].values  # type: ignore[index]
    wrong = {"requests": [{"model": "models/other", "content": {"parts": [{"text": "a"}]}}]}
    assert post(fake, "/v1beta/models/text-embedding-004:batchEmbedContents", wrong).status_code == 400
    assert client.models.count_tokens(model=MODEL, contents="a b c").total_tokens == 3


def test_gemini_3_signs_its_calls_and_wants_the_signatures_back(fake: FakeProviderThread) -> None:
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    fake.script([{"tool_calls": "auto"}])
    client = sdk(fake)  # the SDK passes the model's parts back as they came: signature included
    config = types.GenerateContentConfig(tools=[get_weather])
    r = client.models.generate_content(model="gemini-3-pro-preview", contents="weather?", config=config)
    assert r.text == "Echo: sunny"
    path = "/v1beta/models/gemini-3-pro-preview:generateContent"
    call = fake.requests[-1].json["contents"][1]["parts"][0]
    assert call.get("thoughtSignature") or call.get("thought_signature")
    user = {"role": "user", "parts": [{"text": "weather?"}]}
    unsigned = {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "x"}}}]}
    answer = {
        "role": "user",
        "parts": [{"functionResponse": {"name": "get_weather", "response": {"r": "ok"}}}],
    }
    r2 = post(fake, path, {"contents": [user, unsigned, answer], "tools": TOOLS})
    assert r2.status_code == 400 and "missing a thought_signature" in r2.json()["error"]["message"]
    skip = {
        **unsigned,
        "parts": [{**unsigned["parts"][0], "thoughtSignature": "skip_thought_signature_validator"}],
    }
    assert post(fake, path, {"contents": [user, skip, answer], "tools": TOOLS}).status_code == 200
    earlier = {
        "contents": [user, unsigned, answer, {"role": "model", "parts": [{"text": "ok"}]}, user],
        "tools": TOOLS,
    }
    assert post(fake, path, earlier).status_code == 200  # an earlier turn's calls need none
    assert post(fake, GEN, {"contents": [user, unsigned, answer], "tools": TOOLS}).status_code == 200  # 2.0
