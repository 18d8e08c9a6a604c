"""Fuzz the Gemini pairs as test_fuzz_translate_{request,response,stream}.py fuzz the others:
client bodies translate to a body google-genai's types accept or a 400; Gemini answers, streams and
errors with wrong types, junk and cuts give a valid client result (or a 502); Gemini clients get
valid GenerateContentResponse chunks that end with a finish reason or an error chunk."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from fuzz_helpers import (
    _Gen,
    anthropic_bodies,
    client_events,
    dumps,
    error_bodies,
    fuzz,
    json_values,
    openai_bodies,
    parse_or_error,
    provider_streams,
    statuses,
    texts,
)
from hypothesis import given, note
from hypothesis import strategies as st
from test_fuzz_translate_response import check_usage, respond
from test_fuzz_translate_stream import run_stream
from translate_helpers import validate_error, validate_request, validate_response

from sidegate.errors import Api, GatewayError
from sidegate.translate import TranslateOptions, get_translator

MODEL = "gemini-model"
_junk = _Gen(True)
_counts = st.integers(0, 5000) | st.integers(-(2**63), 2**64 - 1)

# ------------------------------------------------------------------------ Gemini-shaped answers

_usage = _junk.obj(
    {},
    {
        "promptTokenCount": _counts,
        "candidatesTokenCount": _counts,
        "thoughtsTokenCount": _counts,
        "cachedContentTokenCount": _counts,
        "toolUsePromptTokenCount": _counts,
        "totalTokenCount": _counts,
    },
)
_part = st.one_of(
    _junk.obj({"text": texts}, {"thought": st.booleans(), "thoughtSignature": texts}),
    _junk.obj(
        {
            "functionCall": _junk.obj(
                {"name": texts}, {"id": texts, "args": st.dictionaries(texts, texts, max_size=2)}
            )
        },
        {"thoughtSignature": texts},
    ),
    _junk.obj({"executableCode": json_values}),
)
_finish = st.sampled_from(
    [
        "STOP",
        "MAX_TOKENS",
        "SAFETY",
        "RECITATION",
        "MALFORMED_FUNCTION_CALL",
        "OTHER",
        "PROHIBITED_CONTENT",
        "X",
    ]
)
_candidate = _junk.obj(
    {"content": _junk.obj({"role": st.just("model")}, {"parts": st.lists(_part, max_size=3)})},
    {"finishReason": _finish, "index": st.integers(0, 1)},
)
gemini_answers = _junk.obj(
    {},
    {
        "candidates": st.lists(_candidate, max_size=2),
        "promptFeedback": _junk.obj({"blockReason": st.sampled_from(["SAFETY", "OTHER", ""])}),
        "usageMetadata": _usage,
        "modelVersion": texts,
        "responseId": texts,
    },
)
google_errors = _junk.obj(
    {"error": _junk.obj({"code": st.integers(100, 600), "message": texts, "status": texts})}
).map(dumps)


@st.composite
def gemini_streams(draw: Any) -> list[bytes]:
    """Gemini SSE bytes (answers as events, junk lines, error chunks), cut anywhere."""
    events = draw(
        st.lists(st.one_of(gemini_answers, gemini_answers, google_errors.map(orjson.loads)), max_size=6)
    )
    blocks = [b"data: " + dumps(ev) for ev in events]
    for _ in range(draw(st.integers(0, 2))):
        blocks.insert(
            draw(st.integers(0, len(blocks))), draw(st.sampled_from([b": ka", b"data: x", b"data: [1]"]))
        )
    newline = draw(st.sampled_from([b"\n", b"\r\n"]))
    raw = b"".join(b + newline + newline for b in blocks)
    if draw(st.booleans()):
        raw = raw[: draw(st.integers(0, len(raw)))]
    cuts = sorted(draw(st.lists(st.integers(0, len(raw)), max_size=5)))
    return [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]


# ------------------------------------------------------------------------ Gemini client bodies

_g_schema = st.sampled_from(
    [
        {"type": "OBJECT", "properties": {"a": {"type": "STRING", "nullable": True}}},
        {"type": "object"},
        {"type": 5},
        [],
    ]
)
_g_part = st.one_of(
    _junk.obj({"text": texts}, {"thought": st.booleans()}),
    _junk.obj(
        {
            "inlineData": _junk.obj(
                {"mimeType": st.sampled_from(["image/png", "application/pdf", "audio/wav"]), "data": texts}
            )
        }
    ),
    _junk.obj(
        {
            "fileData": _junk.obj(
                {"fileUri": st.sampled_from(["https://x.test/a.png", "gs://b/o", "ftp://x"])},
                {"mimeType": texts},
            )
        }
    ),
    _junk.obj(
        {"functionCall": _junk.obj({"name": st.sampled_from(["f", "g"])}, {"id": texts, "args": json_values})}
    ),
    _junk.obj(
        {
            "functionResponse": _junk.obj(
                {"name": st.sampled_from(["f", "g"]), "response": json_values}, {"id": texts}
            )
        }
    ),
)
gemini_bodies = _junk.obj(
    {
        "contents": st.lists(
            _junk.obj(
                {"parts": st.lists(_g_part, max_size=3)}, {"role": st.sampled_from(["user", "model", "x"])}
            ),
            max_size=4,
        )
    },
    {
        "systemInstruction": _junk.obj({"parts": st.lists(_junk.obj({"text": texts}), max_size=2)}),
        "tools": st.lists(
            _junk.obj(
                {},
                {
                    "functionDeclarations": st.lists(
                        _junk.obj(
                            {"name": st.sampled_from(["f", "g"])},
                            {"parameters": _g_schema, "description": texts},
                        ),
                        max_size=2,
                    ),
                    "googleSearch": st.just({}),
                },
            ),
            max_size=2,
        ),
        "toolConfig": _junk.obj(
            {
                "functionCallingConfig": _junk.obj(
                    {},
                    {
                        "mode": st.sampled_from(["AUTO", "ANY", "NONE", "X"]),
                        "allowedFunctionNames": st.lists(st.sampled_from(["f", "g"]), max_size=2),
                    },
                )
            }
        ),
        "generationConfig": _junk.obj(
            {},
            {
                "maxOutputTokens": st.integers(-1, 5000),
                "temperature": st.floats(0, 2),
                "topP": st.floats(0, 1),
                "topK": st.integers(1, 100) | st.floats(1, 5),
                "stopSequences": st.lists(texts, max_size=2),
                "responseMimeType": st.sampled_from(["text/plain", "application/json", "text/x.enum"]),
                "responseSchema": _g_schema,
                "thinkingConfig": _junk.obj(
                    {},
                    {
                        "thinkingBudget": st.integers(-2, 30000),
                        "thinkingLevel": st.sampled_from(["low", "high"]),
                    },
                ),
                "candidateCount": st.integers(1, 2),
                "seed": st.integers(0, 3),
            },
        ),
        "safetySettings": json_values,
        "cachedContent": texts,
    },
)


def _validate_gemini(body: dict[str, Any]) -> None:
    """validate_request, but a client's own base64 goes upstream as sent (Gemini answers a bad one
    with its 400, translated for the client): the gateway does not decode images on the hot path."""
    from pydantic import ValidationError

    try:
        validate_request(Api.GEMINI, body)
    except ValidationError as err:
        assert all(
            e["type"] == "bytes_invalid_encoding" and e["loc"][-2:] == ("inlineData", "data")
            for e in err.errors()
        ), err


def _translate(
    inbound: Api, upstream: Api, body: dict[str, Any], stream: bool | None = None
) -> dict[str, Any] | None:
    tr = get_translator(inbound, upstream)
    try:
        preq = tr.request(body, model=MODEL, opts=TranslateOptions(stream=stream))
    except GatewayError as err:
        assert err.status == 400 and err.message.strip(), err
        return None
    return {"path": preq.path, "body": orjson.loads(preq.body)}


# ------------------------------------------------------------------------------------ requests


@fuzz(200)
@given(body=openai_bodies)
def test_openai_to_gemini(body: dict[str, Any]) -> None:
    note(f"body={body!r}")
    ctx = parse_or_error(Api.OPENAI, dumps(body))
    out = ctx and _translate(Api.OPENAI, Api.GEMINI, ctx.body)
    if out:
        assert out["path"].startswith(f"/v1beta/models/{MODEL}:")
        _validate_gemini(out["body"])


@fuzz(200)
@given(body=anthropic_bodies)
def test_anthropic_to_gemini(body: dict[str, Any]) -> None:
    note(f"body={body!r}")
    ctx = parse_or_error(Api.ANTHROPIC, dumps(body))
    out = ctx and _translate(Api.ANTHROPIC, Api.GEMINI, ctx.body)
    if out:
        _validate_gemini(out["body"])


@pytest.mark.parametrize("upstream", [Api.OPENAI, Api.ANTHROPIC, Api.RESPONSES], ids=lambda a: a.value)
@fuzz(150)
@given(body=gemini_bodies, stream=st.booleans())
def test_gemini_client_requests(upstream: Api, body: dict[str, Any], stream: bool) -> None:
    note(f"body={body!r}")
    out = _translate(Api.GEMINI, upstream, body, stream)
    if out:
        if upstream is not Api.ANTHROPIC:  # Anthropic's sampling keys are outside its SDK types
            validate_request(upstream, out["body"])
        assert bool(out["body"].get("stream")) is stream


# ----------------------------------------------------------------------------------- responses


@fuzz(200)
@given(body=gemini_answers)
def test_gemini_answers(body: dict[str, Any]) -> None:
    raw = dumps(body)
    for inbound in (Api.OPENAI, Api.ANTHROPIC, Api.GEMINI):
        respond(inbound, Api.GEMINI, raw)
    try:
        out, usage = get_translator(Api.RESPONSES, Api.GEMINI).response(raw)
    except GatewayError as err:
        assert err.status == 502
        return
    check_usage(usage)
    validate_response(Api.RESPONSES, orjson.loads(out))


@pytest.mark.parametrize("upstream", [Api.OPENAI, Api.ANTHROPIC], ids=lambda a: a.value)
@fuzz(60)
@given(body=st.binary(max_size=100) | json_values.map(dumps))
def test_garbage_for_gemini_client(upstream: Api, body: bytes) -> None:
    respond(Api.GEMINI, upstream, body)


@pytest.mark.parametrize(
    "pair",
    [(i, Api.GEMINI) for i in (Api.OPENAI, Api.ANTHROPIC, Api.RESPONSES, Api.GEMINI)]
    + [(Api.GEMINI, u) for u in (Api.OPENAI, Api.ANTHROPIC, Api.RESPONSES)],
    ids=lambda p: f"{p[0].value}-to-{p[1].value}",
)
@fuzz(60)
@given(status=statuses, body=error_bodies | google_errors)
def test_errors(pair: tuple[Api, Api], status: int, body: bytes) -> None:
    out_status, out = get_translator(*pair).error(status, body)
    assert 400 <= out_status <= 599
    validate_error(pair[0], out)


# ------------------------------------------------------------------------------------- streams


@pytest.mark.parametrize("inbound", [Api.OPENAI, Api.ANTHROPIC], ids=lambda a: a.value)
@fuzz(120)
@given(chunks=gemini_streams(), wants_usage=st.booleans())
def test_gemini_streams(inbound: Api, chunks: list[bytes], wants_usage: bool) -> None:
    note(f"chunks={chunks!r}")
    run_stream(inbound, Api.GEMINI, chunks, wants_usage)


def run_gemini_client_stream(upstream: Api, chunks: list[bytes]) -> bytes:
    """A Gemini client's stream: valid chunks, the last one with a finish reason or an error chunk,
    nothing after it."""
    st_ = get_translator(Api.GEMINI, upstream).stream(client_wants_usage=False)
    data = b"".join(st_.feed(c) for c in chunks) + st_.finish()
    assert st_.finish() == b""
    check_usage(st_.usage)
    events = client_events(data)
    assert events
    ends = []
    for name, payload in events:
        assert name is None
        obj = orjson.loads(payload)
        if "error" in obj:
            validate_error(Api.GEMINI, payload)
            ends.append(True)
        else:
            if upstream is not Api.GEMINI:
                validate_response(Api.GEMINI, obj)
            ends.append(any("finishReason" in c for c in obj.get("candidates", [])))
    if upstream is not Api.GEMINI:
        assert ends[-1] and not any(ends[:-1]), events
    return data


@pytest.mark.parametrize("upstream", [Api.OPENAI, Api.ANTHROPIC], ids=lambda a: a.value)
@fuzz(120)
@given(data=st.data())
def test_streams_for_gemini_client(upstream: Api, data: st.DataObject) -> None:
    chunks = data.draw(provider_streams(upstream))
    note(f"chunks={chunks!r}")
    run_gemini_client_stream(upstream, chunks)


@fuzz(100)
@given(chunks=gemini_streams())
def test_gemini_passthrough_stream(chunks: list[bytes]) -> None:
    note(f"chunks={chunks!r}")
    st_ = get_translator(Api.GEMINI, Api.GEMINI).stream(client_wants_usage=False)
    out = b"".join(st_.feed(c) for c in chunks) + st_.finish()
    assert st_.done and st_.finish() == b""
    check_usage(st_.usage)
    for _, payload in client_events(out):
        assert isinstance(orjson.loads(payload), dict)
