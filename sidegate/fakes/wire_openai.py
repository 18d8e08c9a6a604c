"""OpenAI wire format: chat.completion bodies, chat.completion.chunk SSE events, errors, embeddings."""

from __future__ import annotations

import base64
import functools
import hashlib
import struct
import time
import uuid
from typing import Any

import orjson

from sidegate.fakes.answer import Answer
from sidegate.fakes.text import approx_tokens, split_pieces, split_words

__all__ = ["completion", "embeddings", "error_body", "headers", "models", "stream_events"]

_ERRORS = {  # status -> (type, code, default message)
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: (
        "invalid_request_error",
        "unsupported_country_region_territory",
        "Country, region, or territory not supported",
    ),
    404: (
        "invalid_request_error",
        "model_not_found",
        "The model does not exist or you do not have access to it.",
    ),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again later."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    503: ("server_error", None, "The engine is currently overloaded, please try again later"),
}
_FINGERPRINT = "fp_fake0001"


def headers(request_id: str, processing_ms: int) -> dict[str, str]:
    return {
        "x-request-id": request_id,
        "openai-processing-ms": str(processing_ms),
        "openai-version": "2020-10-01",
        "openai-organization": "fake-org",
        "x-ratelimit-limit-requests": "10000",
        "x-ratelimit-limit-tokens": "30000000",
        "x-ratelimit-remaining-requests": "9999",
        "x-ratelimit-remaining-tokens": "29999000",
        "x-ratelimit-reset-requests": "6ms",
        "x-ratelimit-reset-tokens": "2ms",
    }


def error_body(status: int, error: str | dict[str, Any] | None) -> bytes:
    """`{"error": {"message", "type", "param", "code"}}` for `status`, overridable field by field."""
    etype, code, message = _ERRORS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None, f"Error {status}")
    )
    err: dict[str, Any] = {"message": message, "type": etype, "param": None, "code": code}
    if isinstance(error, str):
        err["message"] = error
    elif isinstance(error, dict):
        err.update(error)
    return orjson.dumps({"error": err})


def _usage(a: Answer) -> dict[str, Any]:
    return {
        "prompt_tokens": a.prompt_tokens,
        "completion_tokens": a.completion_tokens,
        "total_tokens": a.prompt_tokens + a.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": a.usage_extra.get("cached_tokens", 0), "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": a.usage_extra.get("reasoning_tokens", 0),
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def new_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:29]


def completion(a: Answer) -> bytes:
    message: dict[str, Any] = {"role": "assistant", "content": a.text, "refusal": None, "annotations": []}
    if a.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in a.tool_calls
        ]
    return orjson.dumps(
        {
            "id": new_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": a.model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": a.finish_reason}],
            "usage": _usage(a),
            "service_tier": "default",
            "system_fingerprint": _FINGERPRINT,
        }
    )


def stream_events(a: Answer, include_usage: bool) -> list[bytes]:
    """Every SSE event of the stream, the last one being `data: [DONE]`."""
    head = {
        "id": new_id(),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": a.model,
        "service_tier": "default",
        "system_fingerprint": _FINGERPRINT,
    }
    if include_usage:
        head["usage"] = None

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        body = {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        return b"data: " + orjson.dumps(body) + b"\n\n"

    first: dict[str, Any] = {
        "role": "assistant",
        "content": "" if a.text is not None else None,
        "refusal": None,
    }
    out = [chunk(first)]
    for piece in split_words(a.text or "", a.chunks):
        out.append(chunk({"content": piece}))
    for i, c in enumerate(a.tool_calls):
        start = {"index": i, "id": c.id, "type": "function", "function": {"name": c.name, "arguments": ""}}
        out.append(chunk({"tool_calls": [start]}))
        for piece in split_pieces(c.arguments, max(2, a.chunks)):
            out.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}))
    out.append(chunk({}, a.finish_reason))
    if include_usage:
        out.append(b"data: " + orjson.dumps({**head, "choices": [], "usage": _usage(a)}) + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    return out


def error_event(err: dict[str, Any]) -> bytes:
    """A mid-stream error as OpenAI sends it: a `data:` line holding an error object."""
    e = {
        "message": err.get("message", "The server had an error while processing your request."),
        "type": err.get("type", "server_error"),
        "param": None,
        "code": err.get("code"),
    }
    return b"data: " + orjson.dumps({"error": e}) + b"\n\n"


@functools.lru_cache(maxsize=4096)
def _vector(text: str, dims: int) -> tuple[float, ...]:
    """A deterministic unit vector for `text` (same text, same vector)."""
    seed = hashlib.blake2b(text.encode(), digest_size=32).digest()
    raw = bytearray()
    counter = 0
    while len(raw) < dims * 4:
        raw += hashlib.blake2b(seed + counter.to_bytes(4, "little"), digest_size=64).digest()
        counter += 1
    ints = struct.unpack(f"<{dims}i", bytes(raw[: dims * 4]))
    vec = [i / 2147483648.0 for i in ints]
    norm = sum(v * v for v in vec) ** 0.5 or 1.0
    return tuple(v / norm for v in vec)


def embeddings(body: dict[str, Any], default_dims: int) -> bytes:
    inputs = body.get("input")
    items: list[Any] = (
        inputs if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) else [inputs]
    )
    dims = int(body.get("dimensions") or default_dims)
    b64 = body.get("encoding_format") == "base64"
    data = []
    tokens = 0
    for i, item in enumerate(items):
        text = item if isinstance(item, str) else orjson.dumps(item).decode()
        tokens += len(item) if isinstance(item, list) else approx_tokens(text)
        vec = _vector(text, dims)
        emb: Any = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode() if b64 else list(vec)
        data.append({"object": "embedding", "index": i, "embedding": emb})
    return orjson.dumps(
        {
            "object": "list",
            "data": data,
            "model": body.get("model", "text-embedding-3-small"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


def models(names: list[str]) -> bytes:
    return orjson.dumps(
        {
            "object": "list",
            "data": [
                {"id": n, "object": "model", "created": 1700000000, "owned_by": "system"} for n in names
            ],
        }
    )
