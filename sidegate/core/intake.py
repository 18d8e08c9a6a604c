"""What every front does with a client request before and after the pipeline, whatever carries it
(the ext_proc gRPC stream or the HTTP front): which API a path is, the unknown-path refusal, the
request's context, the internal headers a client must never set, and the access-log fields."""

from __future__ import annotations

from typing import Any

from sidegate.core.context import Reply, RequestContext
from sidegate.errors import Api, error_body

CHAT_PATH = "/v1/chat/completions"
MESSAGES_PATH = "/v1/messages"
RESPONSES_PATH = "/v1/responses"
EMBEDDINGS_PATH = "/v1/embeddings"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
MODELS_PATH = "/v1/models"

COMPLETIONS = "completions"
"""A completion: `POST /v1/chat/completions`, `POST /v1/messages`, `POST /v1/responses` (RequestContext.endpoint)."""
MODELS = "models"
"""`GET /v1/models` and `GET /v1/models/{id}`."""
EMBEDDINGS = "embeddings"
"""`POST /v1/embeddings`."""
COUNT_TOKENS = "count_tokens"
"""`POST /v1/messages/count_tokens`."""
STORED_RESPONSE = "stored_response"
"""`GET` / `DELETE /v1/responses/{id}` (and its `/input_items`): a Responses answer the gateway kept."""
METERED = frozenset({COMPLETIONS, EMBEDDINGS})
"""The endpoints whose requests spend provider tokens: their answers (the gateway's own refusals and
cache hits included) reach the completion hooks (quota true-up, metrics, ledger). The others (the
model list, count_tokens) are no completion: nothing is metered, charged or recorded."""

_EXACT: dict[str, tuple[Api, str]] = {
    CHAT_PATH: (Api.OPENAI, COMPLETIONS),
    MESSAGES_PATH: (Api.ANTHROPIC, COMPLETIONS),
    RESPONSES_PATH: (Api.RESPONSES, COMPLETIONS),
    EMBEDDINGS_PATH: (Api.OPENAI, EMBEDDINGS),
    COUNT_TOKENS_PATH: (Api.ANTHROPIC, COUNT_TOKENS),
}
"""Every path Sidegate serves, by exact match, with the client's API and the endpoint."""
SERVED = (
    "POST /v1/chat/completions, POST /v1/messages, POST /v1/responses, GET|DELETE /v1/responses/{id}, "
    "POST /v1/embeddings, POST /v1/messages/count_tokens, GET /v1/models and GET /v1/models/{id}"
)
INTERNAL_PREFIX = "x-sidegate-"
"""Headers under this prefix carry the gateway's own state between Envoy and Python."""
_JSON = {"content-type": "application/json"}
_ANTHROPIC_HEADERS = ("anthropic-beta", "anthropic-version")
"""The client's Anthropic protocol headers, kept for an Anthropic provider (per-try stage)."""


def endpoint_of(path: str, headers: dict[str, str] | None = None) -> tuple[Api, str] | None:
    """The client's API and the endpoint of a request path, or None when Sidegate does not serve it."""
    path = path.split("?", 1)[0]
    found = _EXACT.get(path)
    if found is not None:
        return found
    if is_models_path(path):
        return inbound_api(path, headers), MODELS
    if path.startswith(RESPONSES_PATH + "/") and len(path) > len(RESPONSES_PATH) + 1:
        return Api.RESPONSES, STORED_RESPONSE
    return None


def is_models_path(path: str) -> bool:
    path = path.split("?", 1)[0]
    return path == MODELS_PATH or path.startswith(MODELS_PATH + "/")


def inbound_api(path: str, headers: dict[str, str] | None = None) -> Api:
    """Which API format the client speaks, from the request path (also for paths not served); on
    the model list, which both APIs share, from the Anthropic SDK's `anthropic-version` header."""
    if path.startswith("/v1/messages"):
        return Api.ANTHROPIC
    if path.startswith(RESPONSES_PATH):
        return Api.RESPONSES
    if headers is not None and "anthropic-version" in headers and is_models_path(path):
        return Api.ANTHROPIC
    return Api.OPENAI


def open_request(
    path: str, method: str, headers: dict[str, str], *, source: str = "", tenant: str = "", key_id: str = "",
    allowed_models: tuple[str, ...] = (),
) -> RequestContext | Reply:  # fmt: skip
    """A new request's context, or the 404 (in the client's format) for a path Sidegate does not serve."""
    found = endpoint_of(path, headers)
    if found is None:
        return unknown_path(path, headers)
    api, endpoint = found
    ctx = RequestContext(path=path, method=method, headers=headers, api=api, endpoint=endpoint,
                         request_id=headers.get("x-request-id", ""), source=source, tenant=tenant, key_id=key_id,
                         allowed_models=allowed_models)  # fmt: skip
    if endpoint != COMPLETIONS:  # for the per-try stage, the lanes and the completion hooks (a refusal's too)
        ctx.meta["endpoint"] = endpoint
    if api is Api.ANTHROPIC:
        for name in _ANTHROPIC_HEADERS:
            if name in headers:
                ctx.meta[name.replace("-", "_")] = headers[name]
    return ctx


def unknown_path(path: str, headers: dict[str, str] | None = None) -> Reply:
    """The 404 for a path Sidegate does not serve, in the client's format, listing what it serves."""
    msg = f"Unknown path {path.split('?', 1)[0]}: Sidegate serves {SERVED}."
    return Reply(404, error_body(inbound_api(path, headers), 404, msg), dict(_JSON))


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
