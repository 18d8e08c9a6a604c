"""Anthropic wire format: `message` bodies, SSE events with `event:` lines, errors, model list."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from sidegate.fakes.answer import Answer
from sidegate.fakes.text import approx_tokens, split_pieces, split_words

__all__ = ["count_tokens", "error_body", "error_event", "headers", "message", "models", "stream_events"]

_ERRORS = {  # status -> (type, default message)
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timed out"),
    529: ("overloaded_error", "Overloaded"),
}
_TO_ANTHROPIC = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}


def headers(request_id: str) -> dict[str, str]:
    reset = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1))
    return {
        "request-id": request_id,
        "anthropic-organization-id": "00000000-0000-4000-8000-00000000fa4e",
        "anthropic-ratelimit-requests-limit": "4000",
        "anthropic-ratelimit-requests-remaining": "3999",
        "anthropic-ratelimit-requests-reset": reset,
        "anthropic-ratelimit-tokens-limit": "400000",
        "anthropic-ratelimit-tokens-remaining": "399000",
        "anthropic-ratelimit-tokens-reset": reset,
        "anthropic-ratelimit-input-tokens-limit": "200000",
        "anthropic-ratelimit-input-tokens-remaining": "199000",
        "anthropic-ratelimit-input-tokens-reset": reset,
        "anthropic-ratelimit-output-tokens-limit": "80000",
        "anthropic-ratelimit-output-tokens-remaining": "79000",
        "anthropic-ratelimit-output-tokens-reset": reset,
    }


def error_body(status: int, error: str | dict[str, Any] | None, request_id: str) -> bytes:
    """`{"type": "error", "error": {"type", "message"}, "request_id"}` for `status`."""
    etype, message = _ERRORS.get(
        status, ("api_error" if status >= 500 else "invalid_request_error", f"Error {status}")
    )
    err: dict[str, Any] = {"type": etype, "message": message}
    if isinstance(error, str):
        err["message"] = error
    elif isinstance(error, dict):
        err.update({k: v for k, v in error.items() if k in ("type", "message")})
    return orjson.dumps({"type": "error", "error": err, "request_id": request_id})


def _stop_reason(a: Answer) -> str:
    if a.raw_finish and a.raw_finish not in _TO_ANTHROPIC:
        return a.raw_finish
    return _TO_ANTHROPIC.get(a.finish_reason, "end_turn")


def _usage(a: Answer) -> dict[str, Any]:
    u: dict[str, Any] = {
        "input_tokens": a.prompt_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": a.completion_tokens,
    }
    u.update({k: v for k, v in a.usage_extra.items() if k.endswith("_input_tokens")})
    return u


def _tool_input(arguments: str) -> Any:
    try:
        return orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {}


def message(a: Answer) -> bytes:
    content: list[dict[str, Any]] = []
    if a.text is not None:
        content.append({"type": "text", "text": a.text})
    for c in a.tool_calls:
        content.append(
            {"type": "tool_use", "id": _tool_id(c.id), "name": c.name, "input": _tool_input(c.arguments)}
        )
    return orjson.dumps(
        {
            "id": "msg_" + uuid.uuid4().hex[:24],
            "type": "message",
            "role": "assistant",
            "model": a.model,
            "content": content,
            "stop_reason": _stop_reason(a),
            "stop_sequence": None,
            "usage": _usage(a),
        }
    )


def _tool_id(call_id: str) -> str:
    return "toolu_" + call_id[5:] if call_id.startswith("call_") else call_id


def _event(name: str, body: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(body) + b"\n\n"


def stream_events(a: Answer) -> list[bytes]:
    """Every SSE event of the stream, the last one being `message_stop`."""
    usage = _usage(a)
    start_usage = {**usage, "output_tokens": 1}
    msg = {
        "id": "msg_" + uuid.uuid4().hex[:24],
        "type": "message",
        "role": "assistant",
        "model": a.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": start_usage,
    }
    out = [_event("message_start", {"type": "message_start", "message": msg})]
    index = 0
    if a.text is not None:
        block = {"type": "text", "text": ""}
        out.append(
            _event("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block})
        )
        out.append(_event("ping", {"type": "ping"}))
        for piece in split_words(a.text, a.chunks):
            delta = {"type": "text_delta", "text": piece}
            out.append(
                _event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
            )
        out.append(_event("content_block_stop", {"type": "content_block_stop", "index": 0}))
        index = 1
    for c in a.tool_calls:
        block = {"type": "tool_use", "id": _tool_id(c.id), "name": c.name, "input": {}}
        out.append(
            _event(
                "content_block_start", {"type": "content_block_start", "index": index, "content_block": block}
            )
        )
        if index == 0:
            out.append(_event("ping", {"type": "ping"}))
        for piece in split_pieces(c.arguments, max(2, a.chunks)):
            delta = {"type": "input_json_delta", "partial_json": piece}
            out.append(
                _event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
            )
        out.append(_event("content_block_stop", {"type": "content_block_stop", "index": index}))
        index += 1
    delta_usage = {"output_tokens": a.completion_tokens}
    out.append(
        _event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": _stop_reason(a), "stop_sequence": None},
                "usage": delta_usage,
            },
        )
    )
    out.append(_event("message_stop", {"type": "message_stop"}))
    return out


def error_event(err: dict[str, Any]) -> bytes:
    e = {"type": err.get("type", "overloaded_error"), "message": err.get("message", "Overloaded")}
    return _event("error", {"type": "error", "error": e})


def models(names: list[str]) -> bytes:
    data = [
        {"type": "model", "id": n, "display_name": n, "created_at": "2024-10-22T00:00:00Z"} for n in names
    ]
    return orjson.dumps(
        {
            "data": data,
            "has_more": False,
            "first_id": names[0] if names else None,
            "last_id": names[-1] if names else None,
        }
    )


def count_tokens(body: dict[str, Any]) -> bytes:
    """`POST /v1/messages/count_tokens`: `{"input_tokens": N}`, deterministic: the fakes' count of
    the words of what the prompt carries (system, messages, tools), as JSON text."""
    prompt = orjson.dumps({k: body.get(k) for k in ("system", "messages", "tools")}).decode()
    return orjson.dumps({"input_tokens": approx_tokens(prompt.replace('"', " ").replace(",", " "))})
