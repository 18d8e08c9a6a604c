"""Small helpers the prototype codecs share (the same type guards and error shapes Sidegate uses).

Kept here rather than imported from ``sidegate.translate``'s pair modules: the prototype may only
lean on the stable surface (``get_translator`` and ``sidegate.translate.base``).
"""

from __future__ import annotations

from typing import Any

import orjson

from sidegate.errors import Api, GatewayError, error_body
from sidegate.sse import encode_event
from sidegate.translate.base import Usage

dumps = orjson.dumps
STREAM_TRUNCATED = "The upstream provider stream ended before the response was complete."
MALFORMED_EVENT = "The provider sent a malformed stream event; the stream was ended."
_MAX_COUNT = 1 << 53


def loads_object(body: bytes | str) -> dict[str, Any] | None:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def bad_param(param: str, message: str) -> GatewayError:
    return GatewayError(400, message, code="unsupported_parameter", param=param)


def bad_response() -> GatewayError:
    return GatewayError(502, "The upstream provider returned an invalid response body.")


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def need_str(value: Any, param: str, what: str) -> str:
    if not isinstance(value, str):
        raise bad_param(param, f"{what} must be a string.")
    return value


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_str(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


def as_count(value: Any) -> int:
    if not is_int(value) or value < 0:
        return 0
    return min(value, _MAX_COUNT)


def check_sampling(body: dict[str, Any], out: dict[str, Any]) -> None:
    """temperature / top_p / top_k: type-checked (a wrong type is the client's 400), copied to ``out``."""
    for key in ("temperature", "top_p", "top_k"):
        value = body.get(key)
        if value is None:
            continue
        if not (is_int(value) if key == "top_k" else is_number(value)):
            raise bad_param(key, f"{key} must be {'an integer' if key == 'top_k' else 'a number'}.")
        out[key] = value


def usage_from_anthropic(u: dict[str, Any]) -> Usage:
    read = as_count(u.get("cache_read_input_tokens"))
    created = as_count(u.get("cache_creation_input_tokens"))
    return Usage(
        input_tokens=as_count(u.get("input_tokens")) + read + created,
        output_tokens=as_count(u.get("output_tokens")),
        cached_tokens=read,
        cache_creation_tokens=created,
    )


def usage_from_openai(u: Any) -> Usage:
    u = as_dict(u)
    prompt = as_count(u.get("prompt_tokens"))
    cached = as_count(as_dict(u.get("prompt_tokens_details")).get("cached_tokens"))
    return Usage(
        input_tokens=prompt,
        output_tokens=as_count(u.get("completion_tokens")),
        cached_tokens=min(cached, prompt),
    )


def _provider_message(body: bytes) -> str | None:
    obj = loads_object(body)
    if obj is None:
        return None
    err = obj.get("error")
    if isinstance(err, dict):
        msg = err.get("message")
    elif isinstance(err, str):
        msg = err
    else:
        msg = obj.get("message")
        if msg is None and isinstance(obj.get("detail"), str):
            msg = obj["detail"]
    return msg if isinstance(msg, str) and msg else None


def client_error(api: Api, status: int, body: bytes) -> tuple[int, bytes]:
    """Errors are canonical already in both designs: (status, message) out of any provider format."""
    out = status
    if status < 400 or status > 599:
        out = 502
    elif status == 529 and api is Api.OPENAI:
        out = 503
    message = _provider_message(body)
    if message is None:
        if status == 429:
            message = "The upstream provider is rate limiting requests (HTTP 429)."
        elif status >= 500:
            message = f"The upstream provider failed (HTTP {status})."
        else:
            message = f"The upstream provider rejected the request (HTTP {status})."
    return out, error_body(api, out, message)


_OPENAI_ERROR_TYPES = {
    "server": "server_error",
    "rate_limit": "rate_limit_error",
    "invalid_request": "invalid_request_error",
}
_ANTHROPIC_ERROR_TYPES = {
    "server": "api_error",
    "rate_limit": "rate_limit_error",
    "invalid_request": "invalid_request_error",
}


def stream_error(api: Api, message: str, kind: str) -> bytes:
    """The terminal error event in the client's streaming format."""
    if api is Api.ANTHROPIC:
        body = {"type": "error", "error": {"type": _ANTHROPIC_ERROR_TYPES[kind], "message": message}}
        return encode_event("error", dumps(body))
    body = {"error": {"message": message, "type": _OPENAI_ERROR_TYPES[kind], "param": None, "code": None}}
    return encode_event(None, dumps(body))
