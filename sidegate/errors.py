"""Error bodies in each client API's own format, and the error type stages raise.

Every stage that refuses a request raises :class:`GatewayError`; the servicer turns it into an
Envoy ImmediateResponse whose body is rendered here in the *client's* API format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import orjson


class Api(StrEnum):
    """The API schema a client (inbound) or a provider (upstream) speaks."""

    OPENAI = "openai"
    """OpenAI Chat Completions (and the OpenAI-shaped endpoints beside it: models, embeddings)."""
    ANTHROPIC = "anthropic"
    RESPONSES = "responses"
    """OpenAI's Responses API: OpenAI's error format, its own request, answer and stream shapes."""
    GEMINI = "gemini"
    """Google's Gemini API (`generateContent` / `streamGenerateContent`), on Google AI or Vertex AI:
    Google's error format (`{"error": {"code", "message", "status"}}`)."""
    BEDROCK = "bedrock"
    """AWS Bedrock's Converse / ConverseStream API: a provider API only (no client speaks it)."""


CLIENT_APIS = (Api.OPENAI, Api.ANTHROPIC, Api.RESPONSES, Api.GEMINI)
"""The APIs clients call Sidegate in (the others are spoken to providers only)."""


# OpenAI error `type` per HTTP status (what api.openai.com sends).
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "server_error",
    503: "server_error",
    504: "server_error",
}

# Google's canonical error `status` per HTTP status (https://ai.google.dev/gemini-api/docs/troubleshooting).
_GOOGLE_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

# Anthropic error `type` per HTTP status (https://docs.anthropic.com/en/api/errors).
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


@dataclass
class GatewayError(Exception):
    """A refusal with an HTTP status, rendered in the client's API format."""

    status: int
    message: str
    code: str | None = None
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:  # pragma: no cover - debugging aid
        return f"{self.status} {self.message}"


def provider_refused_key(provider: str) -> GatewayError:
    """The provider refused *our* credential (its 401/403): not the client's fault, nor its key."""
    return GatewayError(502, f"Provider '{provider}' rejected the gateway's credentials.")


def provider_invalid_response(provider: str) -> GatewayError:
    return GatewayError(502, f"Provider '{provider}' returned an invalid response.")


def error_body(api: Api, status: int, message: str, code: str | None = None, param: str | None = None) -> bytes:
    """The JSON error body a client of `api` expects for `status`."""
    if api is Api.ANTHROPIC:
        etype = _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return orjson.dumps({"type": "error", "error": {"type": etype, "message": message}})
    if api is Api.GEMINI:
        gstatus = _GOOGLE_STATUSES.get(status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT")
        return orjson.dumps({"error": {"code": status, "message": message, "status": gstatus}})
    etype = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return orjson.dumps({"error": {"message": message, "type": etype, "param": param, "code": code}})


def format_error(api: Api, err: GatewayError) -> bytes:
    """The error body in the client's API format (OpenAI's, Anthropic's or Google's)."""
    return error_body(api, err.status, err.message, err.code, err.param)
