"""What every front does with a client request before and after the pipeline, whatever carries it
(the ext_proc gRPC stream or the HTTP front): which API a path is, the unknown-path refusal, the
request's context, the internal headers a client must never set, and the access-log fields."""

from __future__ import annotations

from typing import Any

from sidegate.core.context import Reply, RequestContext
from sidegate.errors import Api, error_body

CHAT_PATH = "/v1/chat/completions"
MESSAGES_PATH = "/v1/messages"
MODELS_PATH = "/v1/models"
COMPLETIONS = "completions"
"""The endpoint of a completion: `POST /v1/chat/completions`, `POST /v1/messages` (RequestContext.endpoint)."""
MODELS = "models"
"""The endpoint of `GET /v1/models` and `GET /v1/models/{id}`."""
SERVED = "POST /v1/chat/completions, POST /v1/messages, GET /v1/models and GET /v1/models/{id}"
INTERNAL_PREFIX = "x-sidegate-"
"""Headers under this prefix carry the gateway's own state between Envoy and Python."""
_JSON = {"content-type": "application/json"}
_ANTHROPIC_HEADERS = ("anthropic-beta", "anthropic-version")
"""The client's Anthropic protocol headers, kept for an Anthropic provider (per-try stage)."""


def endpoint_api(path: str) -> Api | None:
    """The API an endpoint belongs to, or None when Sidegate does not serve it."""
    path = path.split("?", 1)[0]
    if path == CHAT_PATH:
        return Api.OPENAI
    if path == MESSAGES_PATH:
        return Api.ANTHROPIC
    return None


def is_models_path(path: str) -> bool:
    path = path.split("?", 1)[0]
    return path == MODELS_PATH or path.startswith(MODELS_PATH + "/")


def inbound_api(path: str, headers: dict[str, str] | None = None) -> Api:
    """Which API format the client speaks, from the request path (also for paths not served); on
    the model list, which both APIs share, from the Anthropic SDK's `anthropic-version` header."""
    if path.startswith("/v1/messages"):
        return Api.ANTHROPIC
    if headers is not None and "anthropic-version" in headers and is_models_path(path):
        return Api.ANTHROPIC
    return Api.OPENAI


def open_request(
    path: str, method: str, headers: dict[str, str], *, source: str = "", tenant: str = "", key_id: str = "",
    allowed_models: tuple[str, ...] = (),
) -> RequestContext | Reply:  # fmt: skip
    """A new request's context, or the 404 (in the client's format) for a path Sidegate does not serve."""
    api = endpoint_api(path)
    endpoint = COMPLETIONS
    if api is None and is_models_path(path):
        api, endpoint = inbound_api(path, headers), MODELS
    if api is None:
        msg = f"Unknown path {path.split('?', 1)[0]}: Sidegate serves {SERVED}."
        return Reply(404, error_body(inbound_api(path, headers), 404, msg), dict(_JSON))
    ctx = RequestContext(path=path, method=method, headers=headers, api=api, endpoint=endpoint,
                         request_id=headers.get("x-request-id", ""), source=source, tenant=tenant, key_id=key_id,
                         allowed_models=allowed_models)  # fmt: skip
    if api is Api.ANTHROPIC:
        for name in _ANTHROPIC_HEADERS:
            if name in headers:
                ctx.meta[name.replace("-", "_")] = headers[name]
    return ctx


def client_internal_headers(headers: dict[str, str], ours: tuple[str, ...] = ()) -> list[str]:
    """The internal headers the client sent (never trusted: removed before the request goes on),
    except `ours`, the ones the front itself added."""
    return [k for k in headers if k.startswith(INTERNAL_PREFIX) and k not in ours]


def access_log_fields(meta: dict[str, Any]) -> dict[str, str]:
    """What the access log prints about a request (sidegate/bootstrap/accesslog.py, front_format),
    as the headers the HTTP front hands Envoy."""
    out = {"x-sidegate-tenant": str(meta.get("tenant", "")), "x-sidegate-key-id": str(meta.get("key_id", "")),
           "x-sidegate-model": str(meta.get("model", "")), "x-sidegate-stream": "true" if meta.get("stream") else "false"}  # fmt: skip
    if meta.get("cache"):
        out["x-sidegate-cache"] = str(meta["cache"])
    return out
