"""Gemini API clients (google-genai) through a real Envoy on both fronts, what needs no provider: the
key in `x-goog-api-key` or `?key=` (never logged), every refusal in Google's format (`{"error": {"code",
"message", "status"}}`), unserved paths, bad bodies, an unknown model, the 413s, the model list
(`GET /v1beta/models`, also `/v1/models`) and `:countTokens`. tests/e2e/test_gemini_inbound_pipeline.py
has the completions through providers."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import orjson
import pytest
from gemini_inbound_helpers import HELLO, LIMIT, extra, genai_client, google_error, inbound_stack
from google.genai import errors as genai_errors
from harness import FRONT_SERVICES, Stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=sorted(FRONT_SERVICES))
def gw(request, tmp_path_factory, fake_openai, fake_anthropic, fake_gemini) -> Iterator[Stack]:
    yield from inbound_stack(request, tmp_path_factory, fake_openai, fake_anthropic, fake_gemini)


# -- no provider needed: auth, paths, parse, limits, the model list and token counts ---------------


def test_missing_and_wrong_keys_get_google_401s(gw: Stack, fake_openai, fake_anthropic) -> None:
    path = "/v1beta/models/gpt-4o-mini:generateContent"
    with httpx.Client(base_url=gw.base_url, timeout=10) as c:
        msg = google_error(c.post(path, json=HELLO), 401, "UNAUTHENTICATED")
        assert "x-goog-api-key" in msg and "key" in msg
        google_error(c.post(path, json=HELLO, headers={"x-goog-api-key": "sgk_nope"}), 401, "UNAUTHENTICATED")
        google_error(c.post(path + "?key=sgk_nope", json=HELLO), 401, "UNAUTHENTICATED")
        revoked = gw.keys["acme-revoked"].key
        google_error(c.post(path, json=HELLO, params={"key": revoked}), 401, "UNAUTHENTICATED")
        # a `key` parameter counts on Google's paths only: an OpenAI client's path takes headers
        r = c.post("/v1/chat/completions", params={"key": gw.keys["acme"].key},
                   json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    wrong = genai_client(gw, "sgk_nope")  # (kept in a name: a Client closes its connections when collected)
    with pytest.raises(genai_errors.ClientError) as err:
        wrong.models.generate_content(model="gpt-4o-mini", contents="hi")
    assert err.value.code == 401 and err.value.status == "UNAUTHENTICATED"
    assert fake_openai.requests == [] and fake_anthropic.requests == []


def test_unserved_gemini_paths_get_google_404s(gw: Stack) -> None:
    h = {"x-goog-api-key": gw.keys["acme"].key}
    with httpx.Client(base_url=gw.base_url, timeout=10, headers=h) as c:
        for path in ("/v1beta/models/gpt-4o-mini:embedContent", "/v1beta/models/gpt-4o-mini:batchEmbedContents",
                     "/v1beta/files", "/v1beta/cachedContents", "/v1/models/gpt-4o-mini:predict"):  # fmt: skip
            msg = google_error(c.post(path, json=HELLO), 404, "NOT_FOUND")
            assert "generateContent" in msg, msg  # it says what is served
    client = genai_client(gw)
    with pytest.raises(genai_errors.ClientError) as err:
        client.models.embed_content(model="gpt-4o-mini", contents="hi")
    assert err.value.code == 404 and err.value.status == "NOT_FOUND"


def test_bad_bodies_get_google_400s(gw: Stack, fake_openai) -> None:
    h = {"x-goog-api-key": gw.keys["acme"].key}
    path = "/v1beta/models/gpt-4o-mini:generateContent"
    with httpx.Client(base_url=gw.base_url, timeout=10, headers=h) as c:
        assert "contents" in google_error(c.post(path, json={}), 400, "INVALID_ARGUMENT")
        assert "contents" in google_error(c.post(path, json={"contents": "hi"}), 400, "INVALID_ARGUMENT")
        msg = google_error(
            c.post(path, json={"contents": [{"role": "user", "parts": "hi"}]}), 400, "INVALID_ARGUMENT"
        )
        assert "contents[0].parts" in msg
        bad = {**HELLO, "generationConfig": [1]}
        assert "generationConfig" in google_error(c.post(path, json=bad), 400, "INVALID_ARGUMENT")
        google_error(
            c.post(path, content=b"{nope", headers={"content-type": "application/json"}),
            400,
            "INVALID_ARGUMENT",
        )
        # Google's other stream framing (one JSON array) is not served: SSE only, said plainly
        msg = google_error(
            c.post("/v1beta/models/gpt-4o-mini:streamGenerateContent", json=HELLO), 400, "INVALID_ARGUMENT"
        )
        assert "alt=sse" in msg
    assert fake_openai.requests == []


def test_unknown_model_is_a_google_404(gw: Stack, fake_openai) -> None:
    client = genai_client(gw)
    with pytest.raises(genai_errors.ClientError) as err:
        client.models.generate_content(model="gemini-nope", contents="hi")
    assert err.value.code == 404 and err.value.status == "NOT_FOUND" and "gemini-nope" in err.value.message
    limited = genai_client(gw, gw.keys["acme-limited"].key)
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
            google_error(c.post(path, json=big), 413, "INVALID_ARGUMENT")

            def chunks() -> Iterator[bytes]:
                yield b'{"contents": [{"parts": [{"text": "'
                yield b"x" * (LIMIT + 10)
                yield b'"}]}]}'

            google_error(
                c.post(path, content=chunks(), headers={"content-type": "application/json"}),
                413,
                "INVALID_ARGUMENT",
            )
    assert fake_openai.requests == []


def test_the_sdk_lists_and_gets_the_models_its_key_may_use(gw: Stack, fake_openai, fake_anthropic) -> None:
    client, limited = genai_client(gw), genai_client(gw, gw.keys["acme-limited"].key)
    names = [m.name for m in client.models.list()]
    assert names == [
        f"models/{n}" for n in ("cached", "claude-haiku", "gem-then-oai", "gemini-flash", "gpt-4o", "gpt-4o-mini")
    ]
    beta = genai_client(gw, version="v1beta")  # (either version)
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
    client = genai_client(gw)
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


@pytest.fixture(scope="module")
def inline(tmp_path_factory, fake_openai, fake_anthropic, fake_gemini) -> Iterator[Stack]:
    """The third arrangement: inline auth behind the ext_proc front (the gateway rewrites `:path`)."""
    data = extra(fake_gemini.url)
    data["services"] = {"auth": "inline", "front": "ext_proc"}
    s = Stack(tmp_path_factory.mktemp("inline"), fake_openai.url, fake_anthropic.url, extra=data)
    s.start()
    yield s
    s.stop()


def test_inline_auth_behind_the_ext_proc_front_takes_and_drops_the_query_key(
    inline: Stack, fake_gemini
) -> None:
    key = inline.keys["acme"].key
    with httpx.Client(base_url=inline.base_url, timeout=20) as c:
        google_error(
            c.post("/v1beta/models/gemini-flash:generateContent?key=sgk_nope", json=HELLO),
            401,
            "UNAUTHENTICATED",
        )
        r = c.post(
            "/v1beta/models/gemini-flash:streamGenerateContent", params={"key": key, "alt": "sse"}, json=HELLO
        )
        assert r.status_code == 200 and "Echo" in r.text
        r = c.get("/v1/models", params={"key": key})  # a Gemini client's list (no SDK header, the key told)
        assert r.status_code == 200 and "models/gemini-flash" in [m["name"] for m in r.json()["models"]]
    (rec,) = fake_gemini.requests
    assert key not in orjson.dumps(rec.to_dict()).decode() and rec.query == {"alt": "sse"}
    deadline = time.monotonic() + 10  # (Envoy writes its access log in batches)
    while "streamGenerateContent" not in (logs := inline.logs()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "streamGenerateContent" in logs and key not in logs
