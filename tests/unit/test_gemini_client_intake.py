"""A Gemini API client's request outside the codec: intake (paths, model and stream from the path),
its key (`x-goog-api-key`, `?key=`), parse's checks, the model list and token count in Google's
shapes, the quota's estimate, the guard's fragments and stream restore, the cache's parts, and
Envoy's own replies in Google's format."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from fuzz_helpers import fuzz, json_values
from hypothesis import given
from hypothesis import strategies as st

from sidegate import config, keys
from sidegate.bootstrap.replies import local_reply_config
from sidegate.config.cache import CachePolicy
from sidegate.core.context import Reply, RequestContext
from sidegate.core.intake import (
    COMPLETIONS,
    COUNT_TOKENS,
    MODELS,
    endpoint_of,
    inbound_api,
    open_request,
    query_key,
    without_key,
)
from sidegate.errors import Api, GatewayError
from sidegate.features.auth.decide import Allow, Deny, decide, presented_key
from sidegate.features.cache.gemini_answer import gemini_params, gemini_refusal, reassemble_gemini
from sidegate.features.cache.replay import replay_answer
from sidegate.features.cache.request import CacheRequest
from sidegate.features.guard.fragments import slots
from sidegate.features.guard.gemini_restore import GeminiSseRestorer
from sidegate.features.models import ModelsFeature
from sidegate.features.parse import ParseFeature
from sidegate.features.quota.count_tokens import CountTokensFeature
from sidegate.features.quota.tokens import TokenCounter, max_output_tokens
from sidegate.keystore import KeyRecord

CFG = config.parse({
    "providers": {"p": {"api": "openai", "base_url": "http://127.0.0.1:9"}},
    "models": {m: {"routes": [{"provider": "p"}]} for m in ("a", "b", "c")},
}, env={})  # fmt: skip
HELLO = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


def test_gemini_paths_and_their_endpoints():
    for path, want in (
        ("/v1beta/models/gemini-2.0-flash:generateContent", (Api.GEMINI, COMPLETIONS)),
        ("/v1beta/models/m:streamGenerateContent?alt=sse", (Api.GEMINI, COMPLETIONS)),
        ("/v1/models/m:generateContent", (Api.GEMINI, COMPLETIONS)),  # google-genai's v1
        ("/v1beta/models/m:countTokens", (Api.GEMINI, COUNT_TOKENS)),
        ("/v1beta/models", (Api.GEMINI, MODELS)),
        ("/v1beta/models/m", (Api.GEMINI, MODELS)),
        ("/v1/models/m", (Api.OPENAI, MODELS)),  # OpenAI's model, no colon
        ("/v1beta/models/m:embedContent", None),
        ("/v1beta/models/:generateContent", None),
        ("/v1beta/files", None),
    ):
        assert endpoint_of(path) == want, path
    assert inbound_api("/v1beta/files") is Api.GEMINI and inbound_api("/upload/v1beta/files") is Api.GEMINI
    # the model list both APIs share: Google's when a Gemini client asks
    assert endpoint_of("/v1/models", {"x-goog-api-client": "google-genai-sdk/1"}) == (Api.GEMINI, MODELS)
    assert endpoint_of("/v1/models?key=k", {}) == (Api.GEMINI, MODELS)
    assert endpoint_of("/v1/models", {}) == (Api.OPENAI, MODELS)


def test_the_model_and_the_stream_flag_come_from_the_path():
    ctx = open_request("/v1beta/models/my%2Fmodel:streamGenerateContent?alt=sse", "POST", {})
    assert isinstance(ctx, RequestContext) and (ctx.api, ctx.model, ctx.stream) == (
        Api.GEMINI,
        "my/model",
        True,
    )
    ctx = open_request("/v1/models/a:generateContent", "POST", {})
    assert isinstance(ctx, RequestContext) and (ctx.model, ctx.stream) == ("a", False)
    reply = open_request("/v1beta/models/a:embedContent?key=SECRET", "POST", {})
    assert isinstance(reply, Reply) and reply.status == 404
    err = orjson.loads(reply.body)["error"]
    assert (
        err["status"] == "NOT_FOUND"
        and "SECRET" not in err["message"]
        and "generateContent" in err["message"]
    )


def test_query_key_and_without_key():
    assert query_key("/p?alt=sse&key=sgk_1") == "sgk_1" and query_key("/p?alt=sse") is None
    assert query_key("/p?key=a%2Bb") == "a+b" and query_key("/p?key=") is None
    assert without_key("/p?alt=sse&key=sgk_1") == "/p?alt=sse"
    assert without_key("/p?key=sgk_1") == "/p" and without_key("/p?key=1&a=1&key=2") == "/p?a=1"
    # an escaped name is no key here (never read as one), so it is not the key to drop either
    assert query_key("/p?k%65y=x") is None and without_key("/p?k%65y=x") == "/p?k%65y=x"
    assert without_key("/p?apikey=1") == "/p?apikey=1" and without_key("/p") == "/p"


def test_the_key_from_the_google_header_or_the_query_on_google_paths_only():
    key, kid = keys.new_key()
    records = {kid: KeyRecord(id=kid, tenant="t", hash=keys.hash_key(key), models=("*",))}
    gem = "/v1beta/models/a:generateContent"
    assert presented_key({"x-goog-api-key": key, ":path": gem}) == key
    assert presented_key({":path": f"{gem}?alt=sse&key={key}"}) == key
    assert presented_key({":path": f"/v1/chat/completions?key={key}"}) is None
    assert isinstance(decide({":path": f"{gem}?key={key}"}, records), Allow)
    denied = decide({":path": gem}, records)
    assert isinstance(denied, Deny) and denied.status == 401 and denied.api is Api.GEMINI
    err = orjson.loads(denied.body)["error"]
    assert (err["code"], err["status"]) == (401, "UNAUTHENTICATED") and "x-goog-api-key" in err["message"]
    denied = decide({":path": f"{gem}?key=sgk_nope"}, records)
    assert isinstance(denied, Deny) and orjson.loads(denied.body)["error"]["status"] == "UNAUTHENTICATED"


def _parse(path: str, body: object) -> RequestContext:
    ctx = open_request(path, "POST", {})
    assert isinstance(ctx, RequestContext)
    ctx.raw_body = orjson.dumps(body)
    asyncio.run(ParseFeature().on_request(ctx))
    return ctx


@pytest.mark.parametrize(("body", "says"), [
    ({}, "contents: contents is not specified"),
    ({"contents": []}, "contents: must be a non-empty array"),
    ({"contents": ["hi"]}, "contents[0]: must be a Content"),
    ({"contents": [{"parts": []}]}, "contents[0].parts"),
    ({"contents": [{"role": 1, "parts": [{"text": "x"}]}]}, "contents[0].role"),
    ({**HELLO, "systemInstruction": "be brief"}, "systemInstruction: must be an object"),
    ({**HELLO, "tools": {}}, "tools: must be an array"),
    ({**HELLO, "safety_settings": [1]}, "safety_settings: must be an array"),
])  # fmt: skip
def test_parse_refuses_bad_gemini_bodies(body, says):
    with pytest.raises(GatewayError) as err:
        _parse("/v1beta/models/a:generateContent", body)
    assert err.value.status == 400 and says in err.value.message


def test_parse_keeps_the_paths_model_and_stream():
    ctx = _parse("/v1beta/models/a:streamGenerateContent?alt=sse", HELLO)
    assert (ctx.model, ctx.stream, ctx.client_wants_usage, ctx.body) == ("a", True, True, HELLO)
    assert ctx.upstream_meta()["stream"] is True and ctx.upstream_meta()["model"] == "a"
    with pytest.raises(GatewayError) as err:  # Google's JSON-array stream framing is not served
        _parse("/v1beta/models/a:streamGenerateContent", HELLO)
    assert "alt=sse" in err.value.message
    ctx = _parse("/v1beta/models/a:countTokens", {"generateContentRequest": {"model": "models/a", **HELLO}})
    assert ctx.endpoint == COUNT_TOKENS and ctx.model == "a"
    with pytest.raises(GatewayError):
        _parse("/v1beta/models/a:countTokens", {"generateContentRequest": {"contents": []}})


def _models(path: str, allowed: tuple[str, ...] = ("*",)) -> dict:
    ctx = open_request(path, "GET", {"x-goog-api-key": "k"}, tenant="t", allowed_models=allowed)
    assert isinstance(ctx, RequestContext)
    reply = asyncio.run(ModelsFeature(CFG).on_request(ctx))
    return orjson.loads(reply.body)


def test_the_model_list_in_googles_shape_with_pages():
    assert [m["name"] for m in _models("/v1beta/models")["models"]] == ["models/a", "models/b", "models/c"]
    page = _models("/v1beta/models?pageSize=2")
    assert [m["name"] for m in page["models"]] == ["models/a", "models/b"] and page["nextPageToken"] == "b"
    rest = _models("/v1/models?pageSize=2&pageToken=b")
    assert [m["name"] for m in rest["models"]] == ["models/c"] and "nextPageToken" not in rest
    one = _models("/v1beta/models/b")
    assert one["name"] == "models/b" and "generateContent" in one["supportedGenerationMethods"]
    assert _models("/v1/models/models/c")["name"] == "models/c"
    with pytest.raises(GatewayError) as err:
        _models("/v1beta/models/b", allowed=("a",))
    assert err.value.status == 404


def test_count_tokens_answers_googles_shape_with_the_estimate():
    ctx = _parse("/v1beta/models/a:countTokens", HELLO)
    reply = asyncio.run(CountTokensFeature(CFG).on_request(ctx))
    assert reply is not None and reply.headers["x-sidegate-token-count"] == "estimate"
    assert orjson.loads(reply.body)["totalTokens"] > 0


def test_the_quota_estimate_of_a_gemini_body():
    counter = TokenCounter(CFG.quota.tokenizer)
    short = counter.count(Api.GEMINI, HELLO)
    long = counter.count(Api.GEMINI, {"systemInstruction": {"parts": [{"text": "be brief " * 20}]}, **HELLO})
    assert 0 < short < long
    image = {"contents": [{"parts": [{"inlineData": {"mimeType": "image/png", "data": "AAAA"}}]}]}
    assert counter.count(Api.GEMINI, image) >= CFG.quota.tokenizer.image_tokens
    tools = {
        **HELLO,
        "tools": [{"functionDeclarations": [{"name": "get_weather", "parameters": {"type": "object"}}]}],
    }
    assert counter.count(Api.GEMINI, tools) > short
    assert counter.count(Api.GEMINI, {"generateContentRequest": HELLO}) == short
    assert max_output_tokens({"generationConfig": {"maxOutputTokens": 100, "candidateCount": 2}}, 7) == 200
    assert max_output_tokens({"generationConfig": {}}, 7) == 7


def test_guard_fragments_of_a_gemini_body():
    body = {
        "systemInstruction": {"parts": [{"text": "sys"}]},
        "contents": [
            {"role": "user", "parts": [{"text": "u1"}, {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}]},
            {"role": "model", "parts": [{"text": "thinking", "thought": True}, {"functionCall": {"name": "f", "args": {"q": "a1"}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"out": "r1"}}}]},
        ],
    }  # fmt: skip
    assert [(s.text, s.role) for s in slots(Api.GEMINI, body)] == [
        ("sys", "system"), ("u1", "user"), ("a1", "assistant"), ("r1", "tool")]  # fmt: skip


def _sse(obj: dict) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\r\n\r\n"


def _chunk(text: str, finish: str | None = None) -> dict:
    cand: dict = {"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}
    if finish:
        cand["finishReason"] = finish
    return {"candidates": [cand], "modelVersion": "m"}


def test_gemini_stream_restore_puts_a_split_placeholder_back_whole():
    r = GeminiSseRestorer({"<EMAIL_1>": "jane@example.com"})
    raw = _sse(_chunk("Mail <EMA")) + _sse(_chunk("IL_1> now")) + _sse(_chunk(".", "STOP"))
    out = b"".join(r.feed(raw[i : i + 7]) for i in range(0, len(raw), 7)) + r.finish()
    texts = [orjson.loads(line[6:]) for line in out.split(b"\n") if line.startswith(b"data: ")]
    assert (
        "".join(t["candidates"][0]["content"]["parts"][0]["text"] for t in texts)
        == "Mail jane@example.com now."
    )
    held = GeminiSseRestorer({"<EMAIL_1>": "x@y.z"})
    out = held.feed(_sse(_chunk("to <EMAIL"))) + held.finish()  # cut: released in one more chunk
    assert b"<EMAIL" in out and out.count(b"data: ") == 2
    call = {
        "candidates": [
            {"content": {"parts": [{"functionCall": {"name": "f", "args": {"to": "<EMAIL_1>"}}}]}, "index": 0}
        ]
    }
    assert b"x@y.z" in GeminiSseRestorer({"<EMAIL_1>": "x@y.z"}).feed(_sse(call))
    plain = b"data: " + orjson.dumps(_chunk("nothing to restore")) + b"\n\n"
    assert GeminiSseRestorer({"<EMAIL_1>": "x@y.z"}).feed(plain) == plain  # byte for byte


def test_cache_key_fields_of_a_gemini_request():
    body = {"contents": [{"role": "user", "parts": [{"text": "a"}]}, {"role": "model", "parts": [{"text": "b"}]},
                         {"role": "user", "parts": [{"text": "q1"}, {"text": "q2"}]}],
            "generationConfig": {"temperature": 0.2}, "cachedContent": "cachedContents/x"}  # fmt: skip
    params, last, query, temperature = gemini_params(body)
    assert last == [{"text": "q1"}, {"text": "q2"}] and query == "q1\nq2" and temperature == 0.2
    assert params["cachedContent"] == "cachedContents/x" and params["contents"][-1] == {"role": "user"}
    image = {
        "contents": [{"parts": [{"text": "what?"}, {"inlineData": {"data": "AA", "mimeType": "image/png"}}]}]
    }
    assert gemini_params(image)[2] is None  # not text only: exact only
    one = CacheRequest.from_body(Api.GEMINI, "t", "a", body, {}, COMPLETIONS, True)
    two = CacheRequest.from_body(Api.GEMINI, "t", "a", body, {}, COMPLETIONS, False)
    assert one.stream and not two.stream and one.exact_key == two.exact_key and one.temperature == 0.2


def test_cacheable_reassembled_and_replayed_gemini_answers():
    usage = {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5}
    stream = _sse(_chunk("Hel")) + _sse(_chunk("lo")) + _sse({**_chunk("!", "STOP"), "usageMetadata": usage})
    doc = reassemble_gemini(stream)
    assert doc is not None and doc["candidates"][0]["content"]["parts"] == [{"text": "Hello!"}]
    assert doc["candidates"][0]["finishReason"] == "STOP" and doc["usageMetadata"] == usage
    assert reassemble_gemini(_sse(_chunk("cut"))) is None
    assert reassemble_gemini(_sse(_chunk("x")) + _sse({"error": {"code": 500}})) is None
    policy = CachePolicy(exact=True)
    assert gemini_refusal(doc, policy) is None
    assert gemini_refusal({"candidates": [{"finishReason": "SAFETY"}]}, policy) == "finish_reason:SAFETY"
    call = {"candidates": [{"finishReason": "STOP", "content": {"parts": [{"functionCall": {"name": "f"}}]}}]}
    assert gemini_refusal(call, policy) == "tool_calls"
    body, ctype = replay_answer(Api.GEMINI, doc, stream=True)
    assert ctype == "text/event-stream" and reassemble_gemini(body)["candidates"] == doc["candidates"]
    body, ctype = replay_answer(Api.GEMINI, {**doc, "responseId": "old"}, stream=False)
    replayed = orjson.loads(body)
    assert (
        ctype == "application/json" and replayed["responseId"] != "old" and replayed["usageMetadata"] == usage
    )


def test_envoys_own_replies_have_a_google_shape_for_gemini_paths():
    mappers = local_reply_config()["mappers"]
    google = [
        m for m in mappers if '"status":"' in m["body_format_override"]["text_format_source"]["inline_string"]
    ]
    statuses = {
        m["filter"]["and_filter"]["filters"][0]["status_code_filter"]["comparison"]["value"]["default_value"]
        for m in google
    }
    assert {404, 413, 415, 431, 500, 502, 503, 504} <= statuses
    expr = google[0]["filter"]["and_filter"]["filters"][1]["extension_filter"]["typed_config"]["expression"]
    assert "'gemini'" in expr and "/v1beta/" in expr


def test_a_gemini_clients_completion_is_the_semconvs_generate_content():
    from sidegate import metrics as m
    from sidegate.core.completion import Completion
    from sidegate.features.metrics import MetricsFeature
    from sidegate.translate.base import Usage

    labels = {"gen_ai_operation_name": "generate_content", "gen_ai_provider_name": "p", "gen_ai_request_model": "a",
              "status_class": "2xx"}  # fmt: skip
    before = m.REGISTRY.get_sample_value("gen_ai_server_request_duration_seconds_count", labels) or 0.0
    done = Completion(meta={"tenant": "t", "model": "a", "api": "gemini", "stream": False}, provider="p",
                      upstream_model="a", status=200, usage=Usage(input_tokens=3, output_tokens=2), final=True,
                      streamed=False, attempt=1, started_at=1.0, first_byte_at=1.1, ended_at=1.2, chunks=0)  # fmt: skip
    MetricsFeature(CFG, cost=lambda c: 0.0).on_complete(done)
    assert m.REGISTRY.get_sample_value("gen_ai_server_request_duration_seconds_count", labels) == before + 1


def test_ext_authz_drops_a_gemini_clients_query_key_and_says_whose_format():
    from envoy.service.auth.v3 import external_auth_pb2 as pb

    from authz.service import AuthorizationService
    from sidegate.envoy_pb import struct_to_dict
    from sidegate.trust import Token
    from sidegate.wire import INTERNAL_TOKEN_HEADER

    key, kid = keys.new_key()

    class Cache:
        records = {kid: KeyRecord(id=kid, tenant="t", hash=keys.hash_key(key), models=("*",))}

    class Context:
        def invocation_metadata(self):
            return ((INTERNAL_TOKEN_HEADER, "tok"),)

    service = AuthorizationService(Cache(), Token("tok"))  # type: ignore[arg-type]

    def check(path: str, **headers: str) -> pb.CheckResponse:
        req = pb.CheckRequest()
        req.attributes.request.http.headers.update({":path": path, **headers})
        return asyncio.run(service.Check(req, Context()))  # type: ignore[arg-type]

    ok = check(f"/v1beta/models/a:streamGenerateContent?alt=sse&key={key}")
    assert list(ok.ok_response.query_parameters_to_remove) == ["key"]
    assert "x-goog-api-key" in ok.ok_response.headers_to_remove
    assert struct_to_dict(ok.dynamic_metadata)["api"] == "gemini"
    by_header = check(
        "/v1/models", **{"x-goog-api-key": key}
    )  # the model list: Google's, said in the metadata
    assert (
        not by_header.ok_response.query_parameters_to_remove
        and struct_to_dict(by_header.dynamic_metadata)["api"] == "gemini"
    )
    chat = check("/v1/chat/completions?key=x", authorization=f"Bearer {key}")  # not Google's path: left alone
    assert not chat.ok_response.query_parameters_to_remove and "api" not in struct_to_dict(
        chat.dynamic_metadata
    )
    denied = check("/v1beta/models/a:generateContent?key=sgk_nope")
    assert denied.denied_response.status.code == 401 and '"UNAUTHENTICATED"' in denied.denied_response.body


_parts = st.lists(st.one_of(st.fixed_dictionaries({"text": st.text(max_size=8)}), json_values), max_size=3)
_contents = st.lists(
    st.one_of(
        st.fixed_dictionaries({"role": st.sampled_from(["user", "model", 1]), "parts": _parts}), json_values
    ),
    max_size=3,
)
gemini_bodies = st.fixed_dictionaries(
    {"contents": st.one_of(_contents, json_values)},
    optional={"systemInstruction": json_values, "generationConfig": json_values, "tools": json_values},
)


@fuzz(200)
@given(
    body=gemini_bodies,
    path=st.sampled_from(["a:generateContent", "a:streamGenerateContent?alt=sse", "a:countTokens"]),
)
def test_fuzz_a_gemini_body_parses_or_is_a_400(body: dict, path: str) -> None:
    """Whatever the body, parse answers a context every later stage can rely on, or a 400."""
    ctx = open_request(f"/v1beta/models/{path}", "POST", {})
    assert isinstance(ctx, RequestContext)
    ctx.raw_body = orjson.dumps(body)
    coro = ParseFeature().on_request(ctx)
    try:
        coro.send(None)
    except StopIteration:
        contents = ctx.body["contents"]
        assert isinstance(contents, list) and contents and ctx.model == "a"
        assert all(isinstance(c, dict) and isinstance(c["parts"], list) and c["parts"] for c in contents)
        assert all(isinstance(p, dict) for c in contents for p in c["parts"])
        TokenCounter(CFG.quota.tokenizer).count(Api.GEMINI, ctx.body)  # the quota's estimate never fails
        slots(Api.GEMINI, ctx.body)  # nor the guard's fragments
        CacheRequest.from_body(
            Api.GEMINI, "t", "a", ctx.body, {}, ctx.endpoint, ctx.stream
        )  # nor the cache key
    except GatewayError as err:
        assert err.status == 400 and err.message


@fuzz(150)
@given(chunks=st.lists(json_values, max_size=4), cut=st.integers(1, 50))
def test_fuzz_gemini_stream_restore_and_reassembly_take_any_chunk(chunks: list, cut: int) -> None:
    """A passthrough relays the provider's chunks as they came: junk passes, nothing raises."""
    raw = b"".join(_sse(c) if isinstance(c, dict) else b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks)
    r = GeminiSseRestorer({"<EMAIL_1>": "x@y.z"})
    out = b"".join(r.feed(raw[i : i + cut]) for i in range(0, len(raw), cut)) + r.finish()
    assert isinstance(out, bytes)
    reassemble_gemini(raw)
    candidates = [{"index": [1], "content": {"parts": [{"text": "<EMA"}]}}, {"content": "x"}, 3]
    r.feed(_sse({"candidates": candidates}))


def test_an_openai_model_id_with_colons_stays_openais():
    """Fine-tuned OpenAI ids hold colons: `/v1/models/{x}:{y}` is Google's only with Google's method."""
    assert endpoint_of("/v1/models/ft:gpt-4o-mini:acme::abc123") == (Api.OPENAI, MODELS)
    assert inbound_api("/v1/models/ft:gpt-4o-mini:acme::abc123") is Api.OPENAI
    assert endpoint_of("/v1/models/gpt-4o-mini:generateContent") == (Api.GEMINI, COMPLETIONS)
    assert endpoint_of("/v1/models/gpt-4o-mini:embedContent") is None  # Google's, not served
    assert inbound_api("/v1/models/gpt-4o-mini:embedContent") is Api.GEMINI
    assert endpoint_of("/v1beta/models/ft:x:anything") is None and inbound_api("/v1beta/models/ft:x:anything") is Api.GEMINI
