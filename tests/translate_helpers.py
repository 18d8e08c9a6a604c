"""Shared helpers for the translator tests: golden fixture loading, running, SDK-type validation.

Fixtures live in tests/fixtures/translate/<pair>/<case>/ (see tests/fixtures/translate/README.md).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson
from pydantic import TypeAdapter

from sidegate.errors import Api, GatewayError
from sidegate.translate.anthropic_anthropic import AnthropicAnthropic
from sidegate.translate.base import StreamTranslator, TranslateOptions, Translator, Usage
from sidegate.translate.codecs.translator import CanonicalTranslator
from sidegate.translate.openai_openai import OpenAIOpenAI

FIXTURES = Path(__file__).parent / "fixtures" / "translate"
CREATED = 1700000000
DEFAULT_MODEL = "upstream-model"

# A fixture directory is named like the pair's module: <client api>_<provider api>.
PAIRS: dict[str, tuple[Api, Api]] = {
    "openai_anthropic": (Api.OPENAI, Api.ANTHROPIC),
    "anthropic_openai": (Api.ANTHROPIC, Api.OPENAI),
    "openai_openai": (Api.OPENAI, Api.OPENAI),
    "anthropic_anthropic": (Api.ANTHROPIC, Api.ANTHROPIC),
}
# OpenAI's Responses API (codecs in sidegate/translate/codecs/responses/, passthrough in
# responses_responses.py, codecs/responses_client.py): ids and created_at fixed by responses_translator.
RESPONSES_PAIRS: dict[str, tuple[Api, Api]] = {
    "responses_openai": (Api.RESPONSES, Api.OPENAI),
    "responses_anthropic": (Api.RESPONSES, Api.ANTHROPIC),
    "responses_responses": (Api.RESPONSES, Api.RESPONSES),
    "openai_responses": (Api.OPENAI, Api.RESPONSES),
    "anthropic_responses": (Api.ANTHROPIC, Api.RESPONSES),
}
PAIRS.update(RESPONSES_PAIRS)
# AWS Bedrock's pairs (binary event streams given as stream.json): tests/bedrock_helpers.py and
# tests/unit/test_translate_bedrock_golden.py run them.
BEDROCK_PAIRS = frozenset({"openai_bedrock", "anthropic_bedrock", "responses_bedrock"})
# Google's Gemini API (codecs in sidegate/translate/codecs/gemini/, passthrough in gemini_gemini.py).
GEMINI_PAIRS: dict[str, tuple[Api, Api]] = {
    "openai_gemini": (Api.OPENAI, Api.GEMINI),
    "anthropic_gemini": (Api.ANTHROPIC, Api.GEMINI),
    "responses_gemini": (Api.RESPONSES, Api.GEMINI),
    "gemini_openai": (Api.GEMINI, Api.OPENAI),
    "gemini_anthropic": (Api.GEMINI, Api.ANTHROPIC),
    "gemini_responses": (Api.GEMINI, Api.RESPONSES),
    "gemini_gemini": (Api.GEMINI, Api.GEMINI),
}
PAIRS.update(GEMINI_PAIRS)


def fixed_ids() -> Any:
    """An id factory numbering each kind from 1 (``resp_0001``, ``msg_0001``...), for golden tests."""
    counters: dict[str, int] = {}

    def ids(prefix: str) -> str:
        counters[prefix] = counters.get(prefix, 0) + 1
        return f"{prefix}_{counters[prefix]:04d}"

    return ids


def translator_for(inbound: Api, upstream: Api) -> Translator:
    """A fresh translator for the pair: the same-API passthrough, or the canonical codecs with a
    fixed clock (OpenAI ``created``) and, for a Responses client, fixed ids."""
    from sidegate.translate.codecs.responses_client import ResponsesClientTranslator
    from sidegate.translate.gemini_gemini import GeminiGemini
    from sidegate.translate.responses_responses import ResponsesResponses

    if inbound is upstream:
        passthroughs = {Api.OPENAI: OpenAIOpenAI, Api.ANTHROPIC: AnthropicAnthropic}
        passthroughs.update({Api.RESPONSES: ResponsesResponses, Api.GEMINI: GeminiGemini})
        return passthroughs[inbound]()
    if inbound is Api.RESPONSES:
        return ResponsesClientTranslator(upstream, clock=lambda: CREATED, ids=fixed_ids())
    return CanonicalTranslator(inbound, upstream, clock=lambda: CREATED)


def make_translator(pair: str) -> Translator:
    """A fresh translator for a fixture directory's pair (a Bedrock pair's with fixed answer ids)."""
    if pair in BEDROCK_PAIRS:
        import bedrock_helpers

        return bedrock_helpers.make_translator(pair)
    return translator_for(*PAIRS[pair])


def cases(kind: str | None = None) -> list[Path]:
    """Every case directory (optionally only those holding the input file ``kind``)."""
    out = sorted(p for p in FIXTURES.glob("*/*") if p.is_dir() and p.parent.name not in BEDROCK_PAIRS)
    return [p for p in out if kind is None or (p / kind).exists()]


def case_id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def meta(case: Path) -> dict[str, Any]:
    f = case / "meta.json"
    return json.loads(f.read_text()) if f.exists() else {}


def opts_of(case: Path) -> TranslateOptions:
    return TranslateOptions(**meta(case).get("opts", {}))


def usage_json(usage: Usage | None) -> dict[str, int] | None:
    return None if usage is None else asdict(usage)


# ---------------------------------------------------------------------------------------- running


def _default_model(case: Path) -> str:
    if case.parent.name in BEDROCK_PAIRS:
        import bedrock_helpers

        return bedrock_helpers.DEFAULT_MODEL
    return DEFAULT_MODEL


def stream_data(case: Path) -> bytes:
    """The provider stream of a case: ``stream.sse`` as is, or a Bedrock case's ``stream.json``
    as binary event-stream frames."""
    if case.parent.name in BEDROCK_PAIRS:
        import bedrock_helpers

        return bedrock_helpers.stream_bytes(case)
    return (case / "stream.sse").read_bytes()


def run_request(case: Path) -> Any:
    """ProviderRequest, or the GatewayError the translator raised."""
    tr = make_translator(case.parent.name)
    body = json.loads((case / "request.json").read_text())
    try:
        return tr.request(body, model=meta(case).get("model", _default_model(case)), opts=opts_of(case))
    except GatewayError as err:
        return err


def run_response(case: Path) -> tuple[bytes, Usage | None]:
    return make_translator(case.parent.name).response((case / "response.json").read_bytes())


def new_stream(case: Path) -> StreamTranslator:
    tr = make_translator(case.parent.name)
    return tr.stream(client_wants_usage=meta(case).get("client_wants_usage", False))


def run_stream(case: Path, pieces: list[bytes] | None = None) -> tuple[bytes, Usage | None]:
    """Feed the fixture stream (whole, or as ``pieces``) and return the joined output and usage."""
    st = new_stream(case)
    out = [st.feed(p) for p in (pieces if pieces is not None else [stream_data(case)])]
    out.append(st.finish())
    return b"".join(out), st.usage


def run_error(case: Path) -> tuple[int, bytes]:
    spec = json.loads((case / "provider_error.json").read_text())
    body = spec["body"]
    raw = body.encode() if isinstance(body, str) else orjson.dumps(body)
    return make_translator(case.parent.name).error(spec["status"], raw)


def exact_record(case: Path) -> dict[str, Any]:
    """Everything a translator emits for ``case``, as exact text (JSON key order, spacing and all):
    compared with the pair's ``exact_bytes.json``."""
    if (case / "request.json").exists():
        result = run_request(case)
        if isinstance(result, GatewayError):
            return {
                "gateway_error": {"status": result.status, "param": result.param, "message": result.message}
            }
        return {"path": result.path, "headers": result.headers, "body": result.body.decode()}
    if (case / "response.json").exists():
        body, usage = run_response(case)
        return {"body": body.decode(), "usage": usage_json(usage)}
    if (case / "stream.sse").exists() or (case / "stream.json").exists():
        out, usage = run_stream(case)
        return {"stream": out.decode(), "usage": usage_json(usage)}
    status, body = run_error(case)
    return {"status": status, "body": body.decode()}


# ------------------------------------------------------------------------------------- validation


def _adapters() -> dict[str, TypeAdapter[Any]]:
    import anthropic.types as at
    import openai.types.chat as oc
    from anthropic.types import message_create_params as acp
    from anthropic.types.beta import message_create_params as bcp
    from openai.types.chat import completion_create_params as ocp

    _TYPES.update(
        {
            "anthropic_req": acp.MessageCreateParamsNonStreaming,
            "anthropic_req_stream": acp.MessageCreateParamsStreaming,
            "anthropic_beta_req": bcp.MessageCreateParamsNonStreaming,
            "anthropic_beta_req_stream": bcp.MessageCreateParamsStreaming,
            "openai_req": ocp.CompletionCreateParamsNonStreaming,
            "openai_req_stream": ocp.CompletionCreateParamsStreaming,
        }
    )
    import openai.types.responses as orr
    from openai.types.responses import response_create_params as orcp

    _TYPES.update(
        {
            "responses_req": orcp.ResponseCreateParamsNonStreaming,
            "responses_req_stream": orcp.ResponseCreateParamsStreaming,
        }
    )
    return {
        "responses_req": TypeAdapter(orcp.ResponseCreateParamsNonStreaming),
        "responses_req_stream": TypeAdapter(orcp.ResponseCreateParamsStreaming),
        "responses_event": TypeAdapter(orr.ResponseStreamEvent),
        "anthropic_req": TypeAdapter(acp.MessageCreateParamsNonStreaming),
        "anthropic_req_stream": TypeAdapter(acp.MessageCreateParamsStreaming),
        "anthropic_beta_req": TypeAdapter(bcp.MessageCreateParamsNonStreaming),
        "anthropic_beta_req_stream": TypeAdapter(bcp.MessageCreateParamsStreaming),
        "anthropic_event": TypeAdapter(at.RawMessageStreamEvent),
        "openai_req": TypeAdapter(ocp.CompletionCreateParamsNonStreaming),
        "openai_req_stream": TypeAdapter(ocp.CompletionCreateParamsStreaming),
        "openai_chunk": TypeAdapter(oc.ChatCompletionChunk),
    }


_ADAPTERS: dict[str, TypeAdapter[Any]] = {}
_TYPES: dict[str, Any] = {}


def adapter(name: str) -> TypeAdapter[Any]:
    if not _ADAPTERS:
        _ADAPTERS.update(_adapters())
    return _ADAPTERS[name]


def _force(value: Any) -> None:
    """Consume pydantic's lazy ``Iterable[...]`` validators so nested items are validated too."""
    if isinstance(value, dict):
        for v in value.values():
            _force(v)
    elif isinstance(value, list | tuple) or hasattr(value, "__next__"):
        for v in value:
            _force(v)
    elif hasattr(value, "__dict__") and not isinstance(value, type):
        for v in vars(value).values():
            _force(v)


# Keys the SDK TypedDicts no longer declare but the wire API accepts: Anthropic sampling knobs
# (anthropic-version 2023-06-01), and `top_k` as the OpenAI-compatible servers' (vLLM) extension.
_EXTRA_KEYS = {Api.ANTHROPIC: {"temperature", "top_p", "top_k"}, Api.OPENAI: {"top_k"}}
_EXTRA_KEYS[Api.RESPONSES] = set()


def _anthropic_beta(body: dict[str, Any]) -> bool:
    """A Messages request only the beta API takes (what an ``anthropic-beta`` header announces):
    a beta-only top-level parameter, or a ``system`` turn inside ``messages``."""
    from typing import get_type_hints

    from anthropic.types.message_create_params import MessageCreateParamsNonStreaming

    if (
        set(body)
        - set(get_type_hints(MessageCreateParamsNonStreaming))
        - _EXTRA_KEYS[Api.ANTHROPIC]
        - {"stream"}
    ):
        return True
    messages = body.get("messages")
    return isinstance(messages, list) and any(
        isinstance(m, dict) and m.get("role") == "system" for m in messages
    )


def validate_gemini_request(body: dict[str, Any]) -> None:
    """A ``generateContent`` REST body: each top-level field validates with google-genai's type
    for it (the models forbid unknown keys), and no other field is present."""
    from google.genai import types as gt

    fields: dict[str, Any] = {
        "contents": list[gt.Content],
        "systemInstruction": gt.Content,
        "tools": list[gt.Tool],
        "toolConfig": gt.ToolConfig,
        "generationConfig": gt.GenerationConfig,
        "safetySettings": list[gt.SafetySetting],
        "cachedContent": str,
        "labels": dict[str, str],
    }
    assert isinstance(body.get("contents"), list) and body["contents"], body
    for key, value in body.items():
        assert key in fields, f"key not in the Gemini API: {key}"
        TypeAdapter(fields[key]).validate_python(value)


def validate_request(api: Api, body: dict[str, Any]) -> None:
    """The request validates with the SDK's create-params type (the beta one for a beta Messages
    request), and has no undeclared top-level key (TypedDict validation alone ignores unknown keys)."""
    from typing import get_type_hints

    if api is Api.GEMINI:
        validate_gemini_request(body)
        return
    streaming = bool(body.get("stream"))
    if api is Api.ANTHROPIC:
        name = "anthropic_req_stream" if streaming else "anthropic_req"
        if _anthropic_beta(body):
            name = name.replace("anthropic_", "anthropic_beta_")
    elif api is Api.RESPONSES:
        name = "responses_req_stream" if streaming else "responses_req"
    else:
        name = "openai_req_stream" if streaming else "openai_req"
    _force(adapter(name).validate_python(body))
    declared = set(get_type_hints(_TYPES[name]))
    unknown = set(body) - declared - _EXTRA_KEYS[api]
    assert not unknown, f"keys not in the SDK type: {unknown}"


def validate_response(api: Api, body: dict[str, Any]) -> None:
    if api is Api.GEMINI:
        from google.genai.types import GenerateContentResponse

        GenerateContentResponse._from_response(response=body, kwargs={})  # what the SDK runs
    elif api is Api.ANTHROPIC:
        from anthropic.types import Message

        Message.model_validate(body)
    elif api is Api.RESPONSES:
        from openai.types.responses import Response

        Response.model_validate(body)
    else:
        from openai.types.chat import ChatCompletion

        ChatCompletion.model_validate(body)


def sse_events(data: bytes) -> list[tuple[str | None, bytes]]:
    """(event, data) pairs of a complete SSE byte string (simple reference parser for tests)."""
    out = []
    for block in data.replace(b"\r\n", b"\n").split(b"\n\n"):
        if not block.strip():
            continue
        event, datas = None, []
        for line in block.split(b"\n"):
            if line.startswith(b"event: "):
                event = line[7:].decode()
            elif line.startswith(b"data: "):
                datas.append(line[6:])
        if datas:
            out.append((event, b"\n".join(datas)))
    return out


def validate_stream(api: Api, data: bytes) -> None:
    """Every client event validates with the client SDK's stream types (errors: the error shape)."""
    for event, payload in sse_events(data):
        if payload == b"[DONE]":
            assert api is Api.OPENAI
            continue
        obj = orjson.loads(payload)
        if api is Api.GEMINI:  # no event names; an error is a chunk that starts with "error"
            assert event is None, event
            if "error" in obj:
                assert list(obj) == ["error"] and isinstance(obj["error"]["message"], str)
                assert isinstance(obj["error"]["code"], int) and obj["error"]["status"]
                continue
            validate_response(Api.GEMINI, obj)
            continue
        if api is Api.RESPONSES:  # every event named in its `event:` line and its data
            assert event == obj["type"], (event, obj)
            _force(adapter("responses_event").validate_python(obj))
            continue
        if api is Api.OPENAI:
            if "error" in obj:
                assert isinstance(obj["error"]["message"], str) and obj["error"]["type"]
                continue
            _force(adapter("openai_chunk").validate_python(obj))
        else:
            assert event == obj["type"], (event, obj)
            if obj["type"] == "error":
                assert isinstance(obj["error"]["message"], str) and obj["error"]["type"]
                continue
            if obj["type"] == "ping":
                continue
            _force(adapter("anthropic_event").validate_python(obj))


def validate_error(api: Api, body: bytes) -> None:
    obj = orjson.loads(body)
    if api is Api.GEMINI:
        err = obj["error"]
        assert isinstance(err["message"], str) and isinstance(err["code"], int) and err["status"]
        return
    if api is Api.ANTHROPIC:
        assert obj["type"] == "error" and isinstance(obj["error"]["message"], str) and obj["error"]["type"]
    else:
        assert isinstance(obj["error"]["message"], str) and obj["error"]["type"]
