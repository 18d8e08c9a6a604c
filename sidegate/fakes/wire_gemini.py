"""Gemini wire format (the Gemini API and Vertex AI's publisher models): paths, the request seen as
chat (so every behaviour and the echo work as on the other wires), `GenerateContentResponse` bodies,
SSE chunks, embeddings, token counts and Google's error bodies."""

from __future__ import annotations

import functools
import re
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from sidegate.fakes.answer import Answer
from sidegate.fakes.text import approx_tokens, prompt_text, split_words
from sidegate.fakes.wire_openai import _vector

__all__ = [
    "GeminiCall",
    "batch_embed",
    "chat_view",
    "count_tokens",
    "embed",
    "error_body",
    "error_event",
    "parse_path",
    "response_body",
    "stream_chunks",
]

#: The method after the model's `:` -> the endpoint's name in the fake's request log.
ENDPOINTS = {
    "generateContent": "gemini_generate",
    "streamGenerateContent": "gemini_stream",
    "embedContent": "gemini_embed",
    "batchEmbedContents": "gemini_batch_embed",
    "countTokens": "gemini_count_tokens",
}
SSE_END = b"\r\n\r\n"
"""Google's SSE events end with CRLF lines (clients and gateways split on either line ending)."""
THOUGHT_SIGNATURE = "CiQBzWX3fGVha2Utc2lnbmF0dXJlLW9mLWEtZmFrZS10aG91Z2h0"
"""The opaque base64 signature a Gemini 3 fake puts on its function calls."""
EMBEDDING_DIMS = 768  # text-embedding-004's size, the default when `outputDimensionality` is absent
_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_MESSAGES = {
    400: "Request contains an invalid argument.",
    404: "Requested entity was not found.",
    429: "Resource has been exhausted (e.g. check quota).",
    500: "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
    504: "The request timed out. Please try again.",
}
_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP", "content_filter": "SAFETY"}
_BLOCKED = ("SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY")
PROMPT_BLOCK = "prompt:"
"""A behaviour's `finish_reason` "prompt:SAFETY" (or another block reason) blocks the prompt: no
candidate, `promptFeedback.blockReason` set, as Gemini answers a prompt it refuses."""
# Usage keys of a behaviour that Gemini reports under its own names.
_USAGE_NAMES = {
    "cache_read_input_tokens": "cachedContentTokenCount",
    "cached_tokens": "cachedContentTokenCount",
    "reasoning_tokens": "thoughtsTokenCount",
}
_SAFETY_RATINGS = [
    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True},
    {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
]


@dataclass(frozen=True)
class GeminiCall:
    """A request to a Gemini model: its method (`generateContent`...), model and host API."""

    method: str
    model: str
    vertex: bool  # Vertex AI's `/v1/projects/P/locations/L/publishers/google/models/M:method`

    @property
    def endpoint(self) -> str:
        return ENDPOINTS[self.method]


def parse_path(path: str) -> GeminiCall | None:
    """The Gemini call a path names: `/v1beta/models/M:method` (or `/v1`, `/v1alpha`) on the Gemini
    API; `/v1/projects/P/locations/L/publishers/google/models/M:method` (or `/v1beta1`) on Vertex."""
    if ":" not in path or not path.startswith("/v1"):
        return None
    head, _, method = path.rpartition(":")
    if method not in ENDPOINTS:
        return None
    parts = head.split("/")  # ['', version, ...]
    if parts[1] not in ("v1", "v1beta", "v1alpha", "v1beta1"):
        return None
    if len(parts) == 4 and parts[2] == "models" and parts[3]:
        return GeminiCall(method, parts[3], False)
    vertex = ("projects", "locations", "publishers", "google", "models")
    if (
        len(parts) == 10
        and (parts[2], parts[4], parts[6], parts[7], parts[8]) == vertex
        and all(parts[3:10:2])
    ):
        return GeminiCall(method, parts[9], True)
    return None


def get(obj: Any, name: str) -> Any:
    """`obj[name]` under its camelCase name or its proto name: Google's JSON parser takes both, and
    google-genai sends some fields (`parameters_json_schema`, `mime_type`) in snake_case."""
    if not isinstance(obj, dict):
        return None
    value = obj.get(name)
    return value if value is not None else obj.get(_snake(name))


@functools.cache
def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


# -- the request seen as chat -------------------------------------------------------------------
def _part_text(part: dict[str, Any]) -> str:
    text = part.get("text")
    return text if isinstance(text, str) and not part.get("thought") else ""


def _response_text(response: Any) -> str:
    """A function's result as the next answer echoes it: a lone string value as it is (what a
    translated chat `tool` message or `tool_result` carries), anything else as JSON text."""
    if isinstance(response, dict) and len(response) == 1:
        (value,) = response.values()
        if isinstance(value, str):
            return value
    return orjson.dumps(response).decode() if response is not None else ""


def _lower_types(schema: Any) -> Any:
    """An OpenAPI `responseSchema` (types in capitals: `OBJECT`) as JSON schema (`object`)."""
    if isinstance(schema, dict):
        return {
            k: (v.lower() if k == "type" and isinstance(v, str) else _lower_types(v))
            for k, v in schema.items()
        }
    if isinstance(schema, list):
        return [_lower_types(v) for v in schema]
    return schema


def chat_view(body: dict[str, Any], model: str) -> dict[str, Any]:
    """A chat-shaped copy of a `generateContent` body (messages, system, tools, response_format):
    what `build_answer` reads, so the echo, tool calls, structured output and token counts are
    the other wires' (`prompt_tokens` counts the same words whichever API carried them)."""
    messages: list[dict[str, Any]] = []
    for content in body.get("contents") or []:
        if not isinstance(content, dict):
            continue
        parts = [p for p in content.get("parts") or [] if isinstance(p, dict)]
        results = [get(p, "functionResponse") for p in parts if isinstance(get(p, "functionResponse"), dict)]
        for r in results:
            messages.append({"role": "tool", "content": _response_text(r.get("response"))})
        text = " ".join(t for t in (_part_text(p) for p in parts) if t)
        if text or not results:
            role = "assistant" if content.get("role") == "model" else "user"
            messages.append({"role": role, "content": text})
    view: dict[str, Any] = {"model": model, "messages": messages}
    system = get(body, "systemInstruction")
    if isinstance(system, dict):
        view["system"] = " ".join(_part_text(p) for p in system.get("parts") or [] if isinstance(p, dict))
    tools = []
    for tool in body.get("tools") or []:
        for fn in get(tool, "functionDeclarations") or []:
            if isinstance(fn, dict):
                schema = get(fn, "parametersJsonSchema") or _lower_types(fn.get("parameters"))
                tools.append({"type": "function", "function": {"name": fn.get("name"), "parameters": schema}})
    if tools:
        view["tools"] = tools
    config = get(body, "generationConfig")
    if get(config, "responseMimeType") == "application/json":
        schema = get(config, "responseJsonSchema") or _lower_types(get(config, "responseSchema"))
        view["response_format"] = (
            {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
            if isinstance(schema, dict)
            else {"type": "json_object"}
        )
    return view


# -- answers --------------------------------------------------------------------------------------
def _finish(a: Answer) -> str:
    raw = a.raw_finish or ""
    if raw.isupper():  # scripted in Gemini's own spelling (SAFETY, RECITATION, MALFORMED_FUNCTION_CALL...)
        return raw
    return _FINISH.get(a.finish_reason, "STOP")


def prompt_block(a: Answer) -> str | None:
    raw = a.raw_finish or ""
    return raw[len(PROMPT_BLOCK) :] if raw.startswith(PROMPT_BLOCK) else None


def _usage(a: Answer, final: bool = True) -> dict[str, Any]:
    u: dict[str, Any] = {"promptTokenCount": a.prompt_tokens}
    extra = {_USAGE_NAMES.get(k, k): v for k, v in a.usage_extra.items()}
    if final:
        u["candidatesTokenCount"] = a.completion_tokens
    total = a.prompt_tokens + (a.completion_tokens + int(extra.get("thoughtsTokenCount", 0)) if final else 0)
    u["totalTokenCount"] = total
    u["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": a.prompt_tokens}]
    if final:
        u.update({k: v for k, v in extra.items() if k in ("cachedContentTokenCount", "thoughtsTokenCount")})
    return u


def signs_calls(model: str) -> bool:
    """Gemini 3 models sign their function calls (`thoughtSignature` on the first call part of a
    step) and require the signatures back in the current turn."""
    return model.startswith("gemini-3")


def _call_parts(a: Answer) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for c in a.tool_calls:
        try:
            args = orjson.loads(c.arguments)
        except orjson.JSONDecodeError:
            args = {}
        out.append({"functionCall": {"name": c.name, "args": args if isinstance(args, dict) else {}}})
    if out and signs_calls(a.model):
        out[0]["thoughtSignature"] = THOUGHT_SIGNATURE
    return out


def _candidate(parts: list[dict[str, Any]], finish: str | None) -> dict[str, Any]:
    cand: dict[str, Any] = {}
    if parts:
        cand["content"] = {"parts": parts, "role": "model"}
    if finish is not None:
        cand["finishReason"] = finish
        if finish in _BLOCKED:
            cand["safetyRatings"] = _SAFETY_RATINGS
    cand["index"] = 0
    return cand


def _envelope(
    a: Answer, rid: str, candidates: list[dict[str, Any]] | None, usage: dict[str, Any]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if candidates is not None:
        out["candidates"] = candidates
    out.update({"usageMetadata": usage, "modelVersion": a.model, "responseId": rid})
    return out


def _blocked_prompt(a: Answer, rid: str, reason: str) -> dict[str, Any]:
    out = _envelope(a, rid, None, {**_usage(a, final=False)})
    out["promptFeedback"] = {"blockReason": reason, "safetyRatings": _SAFETY_RATINGS}
    return out


def response_body(a: Answer, rid: str) -> bytes:
    """A `GenerateContentResponse`: one candidate, `usageMetadata`, `modelVersion`, `responseId`."""
    reason = prompt_block(a)
    if reason is not None:
        return orjson.dumps(_blocked_prompt(a, rid, reason))
    finish = _finish(a)
    if finish in _BLOCKED:  # nothing generated: no content, and only the prompt's usage
        return orjson.dumps(_envelope(a, rid, [_candidate([], finish)], _usage(a, final=False)))
    parts = ([{"text": a.text}] if a.text else []) + _call_parts(a)
    return orjson.dumps(_envelope(a, rid, [_candidate(parts, finish)], _usage(a)))


def stream_chunks(a: Answer, rid: str) -> list[dict[str, Any]]:
    """The stream's `GenerateContentResponse` chunks: text piece by piece (each chunk carrying the
    prompt's usage, as Gemini's do), function calls whole, and the finish reason and full usage on
    the last chunk, with the last piece of text."""
    reason = prompt_block(a)
    if reason is not None:
        return [_blocked_prompt(a, rid, reason)]
    finish = _finish(a)
    if finish in _BLOCKED:
        return [_envelope(a, rid, [_candidate([], finish)], _usage(a, final=False))]
    pieces: list[list[dict[str, Any]]] = [[{"text": t}] for t in split_words(a.text or "", a.chunks)]
    calls = _call_parts(a)
    if calls:
        pieces.append(calls)
    if not pieces:
        pieces = [[]]
    out = [_envelope(a, rid, [_candidate(p, None)], _usage(a, final=False)) for p in pieces[:-1]]
    out.append(_envelope(a, rid, [_candidate(pieces[-1], finish)], _usage(a)))
    return out


def sse_events(chunks: list[dict[str, Any]]) -> list[bytes]:
    return [b"data: " + orjson.dumps(c) + SSE_END for c in chunks]


def json_array(chunks: list[dict[str, Any]]) -> bytes:
    """`streamGenerateContent` without `alt=sse`: the chunks as one JSON array."""
    return orjson.dumps(chunks)


def error_body(status: int, message: str | dict[str, Any] | None, details: list[Any] | None = None) -> bytes:
    """Google's `{"error": {"code", "message", "status"[, "details"]}}`."""
    err: dict[str, Any] = {
        "code": status,
        "message": _MESSAGES.get(status, f"Error {status}"),
        "status": _STATUSES.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION"),
    }
    if isinstance(message, str):
        err["message"] = message
    elif isinstance(message, dict):
        err.update({k: v for k, v in message.items() if k in ("message", "status", "details")})
    if details:
        err["details"] = details
    return orjson.dumps({"error": err})


def retry_info(seconds: Any) -> dict[str, Any]:
    """The `RetryInfo` detail Gemini puts on a 429 (its clients read the delay there)."""
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{seconds}s"}


def error_event(err: dict[str, Any]) -> bytes:
    """An error mid-stream: one `data:` event holding Google's error object."""
    status = int(err.get("code", 503)) if str(err.get("code", "")).isdigit() else 503
    body = error_body(status, {"message": err.get("message", _MESSAGES[503])})
    return b"data: " + body + SSE_END


def new_response_id() -> str:
    return uuid.uuid4().hex[:22]


# -- embeddings and counts ------------------------------------------------------------------------
def _content_text(content: Any) -> str:
    if not isinstance(content, dict):
        return ""
    return " ".join(_part_text(p) for p in content.get("parts") or [] if isinstance(p, dict))


def _values(request: dict[str, Any]) -> list[float]:
    dims = get(request, "outputDimensionality")
    return list(
        _vector(_content_text(request.get("content")), int(dims) if isinstance(dims, int) else EMBEDDING_DIMS)
    )


def embed(body: dict[str, Any]) -> bytes:
    """`embedContent`: `{"embedding": {"values": [...]}}` (the same deterministic vector the OpenAI
    wire gives the same text at the same size)."""
    return orjson.dumps({"embedding": {"values": _values(body)}})


def batch_embed(body: dict[str, Any]) -> bytes:
    """`batchEmbedContents`: `{"embeddings": [{"values": [...]}, ...]}` in request order; Gemini
    reports no token usage here."""
    return orjson.dumps({"embeddings": [{"values": _values(r)} for r in body.get("requests") or []]})


def count_tokens(body: dict[str, Any], model: str) -> bytes:
    """`countTokens`: `{"totalTokens": N, "promptTokensDetails"}`, N being what `usageMetadata`
    would report as `promptTokenCount` for the same contents (given bare or in a
    `generateContentRequest`)."""
    inner = get(body, "generateContentRequest")
    n = approx_tokens(prompt_text(chat_view(inner if isinstance(inner, dict) else body, model)))
    return orjson.dumps({"totalTokens": n, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": n}]})
