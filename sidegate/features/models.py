"""models: `GET /v1/models` and `GET /v1/models/{id}`, answered by the gateway without a provider.

Chat UIs and IDE plugins list the models before anything else. The list is the configured models
the caller's key may use, in OpenAI's shape, or in Anthropic's when the request carries
`anthropic-version` (the Anthropic SDK always sends it), or in Google's on `GET /v1beta/models`
(google-genai's models.list and models.get). A model the key may not use does not exist
for it (404, never 403: the list must not reveal what other keys can reach). The model list is
its own endpoint: only auth and this feature see it, and it is no completion (no quota, no
metrics of one, no ledger record, refusals included).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote

import orjson

from sidegate.config import SidegateConfig
from sidegate.core.context import Reply, RequestContext
from sidegate.core.feature import Feature
from sidegate.core.intake import (
    GEMINI_COUNT,
    GEMINI_GENERATE,
    GEMINI_MODELS_PATH,
    GEMINI_STREAM,
    MODELS,
    MODELS_PATH,
)
from sidegate.errors import Api, GatewayError

_JSON = {"content-type": "application/json"}
_ANTHROPIC_MAX_LIMIT = 1000
_GEMINI_PAGE = 50
"""Google's default `pageSize` for models.list (its maximum is 1000)."""
_GEMINI_METHODS = [GEMINI_GENERATE, GEMINI_STREAM, GEMINI_COUNT]


class ModelsFeature(Feature):
    name = "models"
    endpoints = frozenset({MODELS})

    def __init__(self, cfg: SidegateConfig, created: int | None = None):
        self.names = sorted(cfg.models)
        self.created = int(time.time()) if created is None else created
        """When the model list came to be (this process's start): OpenAI's `created`, Anthropic's `created_at`."""
        self.created_at = datetime.fromtimestamp(self.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def reconfigure(self, cfg: SidegateConfig) -> None:
        """A routing change: the list names the latest version's models."""
        self.names = sorted(cfg.models)

    async def on_request(self, ctx: RequestContext) -> Reply:
        if ctx.method != "GET":
            raise GatewayError(405, f"Method {ctx.method} not allowed on {ctx.path.split('?', 1)[0]}; use GET.")
        path, _, query = ctx.path.partition("?")
        allowed = [n for n in self.names if "*" in ctx.allowed_models or n in ctx.allowed_models]
        if ctx.api is Api.GEMINI:
            return self._gemini(path, query, allowed)
        if path.rstrip("/") == MODELS_PATH:
            body = self._anthropic_list(allowed, query) if ctx.api is Api.ANTHROPIC else self._openai_list(allowed)
            return Reply(200, orjson.dumps(body), dict(_JSON))
        name = unquote(path[len(MODELS_PATH) + 1 :])
        if name not in allowed:
            raise GatewayError(404, f"The model '{name}' does not exist or you do not have access to it.",
                               code="model_not_found")  # fmt: skip
        one = self._anthropic_model(name) if ctx.api is Api.ANTHROPIC else self._openai_model(name)
        return Reply(200, orjson.dumps(one), dict(_JSON))

    def _gemini(self, path: str, query: str, allowed: list[str]) -> Reply:
        """Google's shape: `GET /v1beta/models` pages `{"models": [...], "nextPageToken"}` (`pageSize`,
        `pageToken`: the last name of the page before), `GET /v1beta/models/{model}` one Model
        (also under `/v1`, google-genai's default once given a base_url)."""
        prefix = GEMINI_MODELS_PATH if path.startswith(GEMINI_MODELS_PATH) else MODELS_PATH  # (v1: google-genai's default)
        if path.rstrip("/") == prefix:
            q = {k: v[-1] for k, v in parse_qs(query).items()}
            try:
                size = int(q.get("pageSize", _GEMINI_PAGE))
            except ValueError:
                raise GatewayError(400, "pageSize: must be an integer.", param="pageSize") from None
            size = min(size if size > 0 else _GEMINI_PAGE, _ANTHROPIC_MAX_LIMIT)
            token = q.get("pageToken", "")
            rest = allowed[allowed.index(token) + 1 :] if token in allowed else allowed if not token else []
            body: dict[str, Any] = {"models": [self._gemini_model(n) for n in rest[:size]]}
            if len(rest) > size:
                body["nextPageToken"] = rest[size - 1]
            return Reply(200, orjson.dumps(body), dict(_JSON))
        name = unquote(path[len(prefix) + 1 :]).removeprefix("models/")
        if name not in allowed:
            raise GatewayError(404, f"models/{name} is not found or you do not have access to it.")
        return Reply(200, orjson.dumps(self._gemini_model(name)), dict(_JSON))

    @staticmethod
    def _gemini_model(name: str) -> dict[str, Any]:
        return {"name": f"models/{name}", "baseModelId": name, "version": "sidegate", "displayName": name,
                "supportedGenerationMethods": _GEMINI_METHODS}  # fmt: skip

    def _openai_model(self, name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": self.created, "owned_by": "sidegate"}

    def _openai_list(self, names: list[str]) -> dict[str, Any]:
        return {"object": "list", "data": [self._openai_model(n) for n in names]}

    def _anthropic_model(self, name: str) -> dict[str, Any]:
        return {"type": "model", "id": name, "display_name": name, "created_at": self.created_at}

    def _anthropic_list(self, names: list[str], query: str) -> dict[str, Any]:
        """Anthropic's page: `limit` (1-1000, default 20), `after_id` / `before_id` cursors."""
        q = {k: v[-1] for k, v in parse_qs(query).items()}
        try:
            limit = int(q.get("limit", "20"))
        except ValueError:
            raise GatewayError(400, "limit: Input should be a valid integer", param="limit") from None
        if not 1 <= limit <= _ANTHROPIC_MAX_LIMIT:
            raise GatewayError(400, f"limit: Input should be between 1 and {_ANTHROPIC_MAX_LIMIT}", param="limit")
        if "after_id" in q:
            rest = names[names.index(q["after_id"]) + 1 :] if q["after_id"] in names else []
            page = rest[:limit]
        elif "before_id" in q:  # the page just before the cursor
            rest = names[: names.index(q["before_id"])] if q["before_id"] in names else []
            page = rest[-limit:]
        else:
            rest = names
            page = rest[:limit]
        more = len(rest) > limit
        data = [self._anthropic_model(n) for n in page]
        return {"data": data, "has_more": more, "first_id": page[0] if page else None,
                "last_id": page[-1] if page else None}  # fmt: skip
