"""Gemini API clients (google-genai) through a real Envoy on both fronts: `models/{model}:generateContent`,
`:streamGenerateContent?alt=sse` and `:countTokens`, `GET /v1beta/models`, the key in `x-goog-api-key`
or `?key=`, and every refusal in Google's format (`{"error": {"code", "message", "status"}}`)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from harness import FRONT_SERVICES, Stack, front_stack

pytestmark = pytest.mark.e2e
LIMIT = 64 * 1024
EXTRA = {"listener": {"max_request_bytes": LIMIT}}
HELLO = {"contents": [{"role": "user", "parts": [{"text": "Say hi"}]}]}


@pytest.fixture(scope="module", params=sorted(FRONT_SERVICES))
def gw(request, tmp_path_factory, fake_openai, fake_anthropic) -> Iterator[Stack]:
    yield from front_stack(request.param, tmp_path_factory.mktemp("stack"), fake_openai.url, fake_anthropic.url, EXTRA)


def _client(gw: Stack, key: str | None = None) -> genai.Client:
    return genai.Client(api_key=key or gw.keys["acme"].key, http_options=types.HttpOptions(base_url=gw.base_url))


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
    assert names == ["models/claude-haiku", "models/gpt-4o", "models/gpt-4o-mini"]
    page = client.models.list(config={"page_size": 2})
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


