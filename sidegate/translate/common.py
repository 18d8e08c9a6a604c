"""Helpers shared by the translators: type guards, provider error parsing, client error rendering
(translated and same-API), SSE errors."""

from __future__ import annotations

from typing import Any

import orjson

from sidegate.errors import Api, GatewayError, error_body
from sidegate.sse import encode_event

__all__ = [
    "as_count",
    "as_dict",
    "as_list",
    "as_str",
    "bad_param",
    "bad_response",
    "client_error",
    "dumps",
    "is_int",
    "is_number",
    "loads_object",
    "looks_like_object",
    "need_str",
    "parse_provider_error",
    "passthrough_error",
    "provider_object",
    "sse_error_event",
]

dumps = orjson.dumps


def loads_object(body: bytes) -> dict[str, Any] | None:
    """``body`` as a JSON object, or None for anything else (garbage, arrays, empty)."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def provider_object(body: bytes) -> dict[str, Any]:
    """A provider's 200 answer as a JSON object; anything else is the gateway's 502, never a 200
    with a broken body handed to the client."""
    obj = loads_object(body)
    if obj is None:
        raise GatewayError(502, "The provider returned an invalid (non-JSON) response.")
    return obj


def bad_param(param: str, message: str) -> GatewayError:
    """A 400 naming the parameter that cannot be expressed upstream."""
    return GatewayError(400, message, code="unsupported_parameter", param=param)


def bad_response() -> GatewayError:
    """A 502 for a provider success body that is not a JSON object."""
    return GatewayError(502, "The upstream provider returned an invalid response body.")


# -- type guards. Requests: a wrong type is the client's error (400, never coerced). Provider
# answers: a wrong type is tolerated (read as absent) so one quirky field cannot break a response.

_MAX_COUNT = 1 << 53


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def need_str(value: Any, param: str, what: str) -> str:
    """``value`` when it is a string, else a 400 saying ``what`` must be one."""
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
    """A provider token count: a non-negative int (anything else reads as 0), capped at 2**53."""
    if not is_int(value) or value < 0:
        return 0
    return min(value, _MAX_COUNT)


def parse_provider_error(body: bytes) -> tuple[str | None, str | None]:
    """(message, provider error type) from an OpenAI, OpenAI-compatible, Anthropic or Google error
    body (Google's type is its ``status``, e.g. ``RESOURCE_EXHAUSTED``)."""
    obj = loads_object(body)
    if obj is None and body[:1] == b"[":  # Google's streaming endpoints: [{"error": {...}}]
        try:
            items = orjson.loads(body)
        except orjson.JSONDecodeError:
            items = None
        obj = items[0] if isinstance(items, list) and items and isinstance(items[0], dict) else None
    if obj is None:
        return None, None
    err = obj.get("error")
    if isinstance(err, dict):  # OpenAI {"error": {...}} and Anthropic {"type": "error", "error": {...}}
        msg, etype = err.get("message"), err.get("type")
        if etype is None:  # Google {"error": {"code", "message", "status"}}: the status is its type
            etype = err.get("status")
    elif isinstance(err, str):  # some OpenAI-compatible servers: {"error": "text"}
        msg, etype = err, None
    else:  # vLLM's older {"object": "error", "message": ...}, FastAPI {"detail": "..."}
        msg, etype = obj.get("message"), obj.get("type")
        if msg is None and isinstance(obj.get("detail"), str):
            msg = obj["detail"]
    return (msg if isinstance(msg, str) and msg else None), (etype if isinstance(etype, str) else None)


def _generic_message(status: int) -> str:
    if status == 429:
        return "The upstream provider is rate limiting requests (HTTP 429)."
    if status >= 500:
        return f"The upstream provider failed (HTTP {status})."
    return f"The upstream provider rejected the request (HTTP {status})."


def client_status(api: Api, status: int) -> int:
    """Provider status -> status for a client of ``api``."""
    if status < 400 or status > 599:
        return 502  # an "error" that is not an HTTP error: the gateway got a bad upstream answer
    if status == 529 and api in (Api.OPENAI, Api.GEMINI):
        return 503  # Anthropic's "overloaded" has no OpenAI counterpart; 503 is what SDKs retry
    return status


def client_error(api: Api, status: int, body: bytes) -> tuple[int, bytes]:
    """Provider error (any known format) -> (status, body) in the format of a client of ``api``."""
    out = client_status(api, status)
    message, _ = parse_provider_error(body)
    return out, error_body(api, out, message or _generic_message(status))


def passthrough_error(api: Api, status: int, body: bytes) -> tuple[int, bytes]:
    """Same-API pairs: the provider's own error body when it is well-formed, else a generic one in
    the same format."""
    message, etype = parse_provider_error(body)
    obj = loads_object(body)
    well_formed = (
        message is not None
        and bool(etype)
        and obj is not None
        and isinstance(obj.get("error"), dict)
        and (api is not Api.ANTHROPIC or obj.get("type") == "error")
        # Google's shape (code + status) for a Gemini client; every other API's has a `type`
        and (is_int(obj["error"].get("code")) if api is Api.GEMINI else bool(obj["error"].get("type")))
    )
    if well_formed and 400 <= status <= 599:
        return status, body
    return client_error(api, status, body)


def looks_like_object(data: bytes) -> bool:
    """A cheap structural check (no parse) that an SSE payload is a JSON object: same-API streams
    relay the provider's bytes without parsing each event."""
    d = data.strip()
    return d[:1] == b"{" and d[-1:] == b"}"


# The form's error types -> the HTTP code a Gemini client's in-stream error carries.
_GOOGLE_CODES = {"rate_limit_error": 429, "invalid_request_error": 400, "overloaded_error": 503}


def sse_error_event(api: Api, message: str, etype: str | None = None) -> bytes:
    """A terminal error event in the client's streaming format (a stream that dies mid-way).

    OpenAI clients get ``data: {"error": {...}}`` (the OpenAI SDKs raise on it); Anthropic clients
    get ``event: error`` with ``{"type": "error", "error": {...}}``; Gemini clients get
    ``data: {"error": {"code", "message", "status"}}`` (the chunk google-genai raises on).
    """
    if api is Api.ANTHROPIC:
        body = {"type": "error", "error": {"type": etype or "api_error", "message": message}}
        return encode_event("error", dumps(body))
    if api is Api.GEMINI:  # google-genai raises APIError on a `data: {"error": ...}` chunk
        return encode_event(None, error_body(Api.GEMINI, _GOOGLE_CODES.get(etype or "", 500), message))
    body = {"error": {"message": message, "type": etype or "server_error", "param": None, "code": None}}
    return encode_event(None, dumps(body))


STREAM_TRUNCATED = "The upstream provider stream ended before the response was complete."
MALFORMED_EVENT = "The provider sent a malformed stream event; the stream was ended."
