"""What every front does with a client request before and after the pipeline, whatever carries it
(the ext_proc gRPC stream or the HTTP front): which API a path is, the unknown-path refusal, the
request's context, the internal headers a client must never set, and the access-log fields."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote, unquote_plus

from sidegate.core.context import Reply, RequestContext
from sidegate.errors import Api, error_body

CHAT_PATH = "/v1/chat/completions"
MESSAGES_PATH = "/v1/messages"
RESPONSES_PATH = "/v1/responses"
EMBEDDINGS_PATH = "/v1/embeddings"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
MODELS_PATH = "/v1/models"
GEMINI_MODELS_PATH = "/v1beta/models"
"""Google's Gemini API: `POST /v1beta/models/{model}:{method}` and the model list `GET /v1beta/models`.
google-genai's `api_version="v1"` spells the calls `/v1/models/{model}:{method}` (the colon tells them
from OpenAI's `GET /v1/models/{id}`)."""
GEMINI_GENERATE = "generateContent"
GEMINI_STREAM = "streamGenerateContent"
GEMINI_COUNT = "countTokens"

COMPLETIONS = "completions"
"""A completion: `POST /v1/chat/completions`, `POST /v1/messages`, `POST /v1/responses`,
`POST /v1beta/models/{model}:generateContent` / `:streamGenerateContent` (RequestContext.endpoint)."""
MODELS = "models"
"""`GET /v1/models` and `GET /v1/models/{id}` (and Google's `GET /v1beta/models[/{model}]`)."""
EMBEDDINGS = "embeddings"
"""`POST /v1/embeddings`."""
COUNT_TOKENS = "count_tokens"
"""`POST /v1/messages/count_tokens`; a Gemini client's `POST /v1beta/models/{model}:countTokens`."""
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
_GEMINI_METHODS: dict[str, str] = {
    GEMINI_GENERATE: COMPLETIONS,
    GEMINI_STREAM: COMPLETIONS,
    GEMINI_COUNT: COUNT_TOKENS,
}
"""The Gemini API methods served (`models/{model}:{method}`): the others (embedContent,
batchEmbedContents, predict...) get Google's 404."""
GOOGLE_METHODS = frozenset({*_GEMINI_METHODS, "embedContent", "batchEmbedContents", "predict", "predictLongRunning",
                            "computeTokens", "batchGenerateContent"})  # fmt: skip
"""Google's model methods: `/v1/models/{model}:{method}` is a Gemini client's only with one of them
(google-genai's v1 spelling), since an OpenAI model id may hold colons (`GET /v1/models/ft:...`)."""
SERVED = (
    "POST /v1/chat/completions, POST /v1/messages, POST /v1/responses, GET|DELETE /v1/responses/{id}, "
    "POST /v1/embeddings, POST /v1/messages/count_tokens, GET /v1/models and GET /v1/models/{id}, "
    "POST /v1beta/models/{model}:generateContent|streamGenerateContent|countTokens (also under /v1), "
    "GET /v1beta/models and GET /v1beta/models/{model}"
)
INTERNAL_PREFIX = "x-sidegate-"
"""Headers under this prefix carry the gateway's own state between Envoy and Python."""
_JSON = {"content-type": "application/json"}
_ANTHROPIC_HEADERS = ("anthropic-beta", "anthropic-version")
"""The client's Anthropic protocol headers, kept for an Anthropic provider (per-try stage)."""


def endpoint_of(path: str, headers: dict[str, str] | None = None) -> tuple[Api, str] | None:
    """The client's API and the endpoint of a request path, or None when Sidegate does not serve it."""
    full, path = path, path.split("?", 1)[0]
    found = _EXACT.get(path)
    if found is not None:
        return found
    call = gemini_call(path)
    if call is not None:
        endpoint = _GEMINI_METHODS.get(call[1])
        return None if endpoint is None or not call[0] else (Api.GEMINI, endpoint)
    if path == GEMINI_MODELS_PATH or path.startswith(GEMINI_MODELS_PATH + "/"):
        return Api.GEMINI, MODELS
    if is_models_path(path):
        return inbound_api(full, headers), MODELS
    if path.startswith(RESPONSES_PATH + "/") and len(path) > len(RESPONSES_PATH) + 1:
        return Api.RESPONSES, STORED_RESPONSE
    return None


def gemini_call(path: str) -> tuple[str, str] | None:
    """(model, method) of a Gemini API call path (`/v1beta/models/{model}:{method}`, or google-genai's
    v1 spelling `/v1/models/{model}:{method}`; the query already cut), else None. The model is
    percent-decoded; a colon inside it is kept (the method is after the last one)."""
    if path.startswith(GEMINI_MODELS_PATH + "/"):
        model, colon, method = path[len(GEMINI_MODELS_PATH) + 1 :].rpartition(":")
        return (unquote(model), method) if colon and "/" not in method else None
    if path.startswith(MODELS_PATH + "/"):  # only Google's method names: OpenAI ids hold colons (`ft:...`)
        model, colon, method = path[len(MODELS_PATH) + 1 :].rpartition(":")
        return (unquote(model), method) if colon and method in GOOGLE_METHODS else None
    return None


def is_gemini_path(path: str) -> bool:
    """A path in Google's API (also one not served: its refusals are in Google's format)."""
    if path.startswith(("/v1beta", "/upload/v1beta/")):  # (chat, messages, responses: two startswith)
        return path.startswith(("/v1beta/", "/v1beta?", "/upload/")) or path == "/v1beta"
    return path.startswith(MODELS_PATH + "/") and gemini_call(path.split("?", 1)[0]) is not None


GEMINI_KEY_HEADER = "x-goog-api-key"
_GOOGLE_SDK_HEADERS = frozenset({GEMINI_KEY_HEADER, "x-goog-api-client"})
"""A Gemini client's headers: its key, and the telemetry header Google's SDKs send."""
KEY_PARAM = "key"
"""The query parameter a Gemini API client may carry its key in (`?key=`, Google's other spelling of
`x-goog-api-key`): read on Gemini paths only, and removed before the request goes on."""


def query_key(path: str) -> str | None:
    """The `key` query parameter of a path (a Gemini client's key), or None."""
    query = path.partition("?")[2]
    if KEY_PARAM + "=" not in query:  # the common case: no parse
        return None
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == KEY_PARAM and value.strip():
            return value.strip()
    return None


def without_key(path: str) -> str:
    """`path` without its `key` query parameter(s), the rest of the query as it was (for a path that
    goes on: never a key in a path Envoy logs, forwards or hands on)."""
    head, sep, query = path.partition("?")
    if not sep or KEY_PARAM + "=" not in query:
        return path
    kept = [p for p in query.split("&") if unquote_plus(p.partition("=")[0]) != KEY_PARAM]
    return head + ("?" + "&".join(kept) if kept else "")


def is_models_path(path: str) -> bool:
    path = path.split("?", 1)[0]
    return path == MODELS_PATH or path.startswith(MODELS_PATH + "/")


def inbound_api(path: str, headers: dict[str, str] | None = None) -> Api:
    """Which API format the client speaks, from the request path (also for paths not served); on
    the model list, which the APIs share, from the Anthropic SDK's `anthropic-version` header or a
    Gemini client's key (`x-goog-api-key`, `?key=`)."""
    if path.startswith("/v1/messages"):
        return Api.ANTHROPIC
    if is_gemini_path(path):
        return Api.GEMINI
    if path.startswith(RESPONSES_PATH):
        return Api.RESPONSES
    if not path.startswith(MODELS_PATH) or not is_models_path(path):
        return Api.OPENAI
    if headers is not None and "anthropic-version" in headers:
        return Api.ANTHROPIC
    if (headers is not None and not _GOOGLE_SDK_HEADERS.isdisjoint(headers)) or query_key(path):
        return Api.GEMINI  # google-genai with a base_url lists `GET /v1/models` (its api_version v1)
    return Api.OPENAI


def open_request(
    path: str, method: str, headers: dict[str, str], *, source: str = "", tenant: str = "", key_id: str = "",
    allowed_models: tuple[str, ...] = (), team: str = "", user: str = "",
) -> RequestContext | Reply:  # fmt: skip
    """A new request's context, or the 404 (in the client's format) for a path Sidegate does not serve."""
    found = endpoint_of(path, headers)
    if found is None:
        return unknown_path(path, headers)
    api, endpoint = found
    ctx = RequestContext(path=path, method=method, headers=headers, api=api, endpoint=endpoint,
                         request_id=headers.get("x-request-id", ""), source=source, tenant=tenant, key_id=key_id,
                         allowed_models=allowed_models, team=team, user=user)  # fmt: skip
    if endpoint != COMPLETIONS:  # for the per-try stage, the lanes and the completion hooks (a refusal's too)
        ctx.meta["endpoint"] = endpoint
    if api is Api.ANTHROPIC:
        for name in _ANTHROPIC_HEADERS:
            if name in headers:
                ctx.meta[name.replace("-", "_")] = headers[name]
    elif api is Api.GEMINI and endpoint != MODELS:  # the model and the stream flag are in the path
        call = gemini_call(path.split("?", 1)[0])
        if call is not None:
            ctx.model = call[0]
            ctx.stream = call[1] == GEMINI_STREAM
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
    for name in ("team", "user", "policy", "reason"):  # (policy, reason: the routing decision)
        if meta.get(name):
            out[f"x-sidegate-{name}"] = str(meta[name])
    return out
