"""A request as the cache sees it: scope hash, exact key, semantic query text and client directives.

Scope = tenant + inbound API + model + a hash of every body field that can change the answer, including
the system prompt and every earlier turn; only the *content* of the last user message is left out. The
exact key adds a hash of that content. The semantic index only compares requests with the same scope,
so a follow-up question in one conversation never matches the same words in another conversation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from sidegate.config.cache import CachePolicy
from sidegate.core.intake import COMPLETIONS
from sidegate.errors import Api

from .embedder import DEFAULT_MODEL, MODELS
from .gemini_answer import gemini_params
from .responses_request import responses_echo, responses_params

__all__ = ["IGNORED_FIELDS", "CacheRequest", "canonical"]

KEY_VERSION = b"sgc1"

IGNORED_FIELDS = frozenset(
    {
        "stream",  # transport only: hits are replayed in the client's streaming shape
        "stream_options",
        "user",  # end-user id for abuse tracking (tenant isolation is in the scope)
        "metadata",
        "store",  # OpenAI: keep the completion on OpenAI's side
        "service_tier",
        "prompt_cache_key",  # provider prompt-cache routing hint
        "safety_identifier",
        "model",  # replaced by the resolved model passed to from_body
    }
)
"""Top-level body fields that never change the answer. Everything else is part of the scope."""

# Prompt-caching markers (Anthropic's, OpenAI Responses'): no effect on the answer.
_STRIP_NESTED = frozenset({"cache_control", "prompt_cache_breakpoint"})


def canonical(obj: Any) -> bytes:
    """Canonical JSON (sorted keys, compact)."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def _strip(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in _STRIP_NESTED}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _text_of(content: Any) -> str | None:
    """The text of a user message made only of text (string or text parts/blocks); else None."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:
        texts = []
        for part in content:
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                return None
            texts.append(part["text"])
        return "\n".join(texts)
    return None


def _header(headers: Mapping[str, str], name: str) -> str:
    for k, v in headers.items():
        if k.lower() == name:
            return v.strip().lower() if isinstance(v, str) else ""
    return ""


@dataclass
class CacheRequest:
    """Keys and directives of one request, computed once by :meth:`from_body`."""

    api: Api
    tenant: str
    model: str
    scope: str
    """Hex hash of tenant, API, model and everything that can change the answer except the last user text."""
    exact_key: str
    """Hex hash of the scope plus the last user message content."""
    query_text: str | None
    """Last user message text for the semantic cache; None -> exact-only (tool results, images, ...)."""
    temperature: float
    stream: bool = False
    include_usage: bool = False
    lookup_allowed: bool = True
    """False for `cache-control: no-cache|no-store` or `x-sidegate-cache: bypass|no-store`."""
    fill_allowed: bool = True
    """False for `cache-control: no-store` or `x-sidegate-cache: no-store`."""
    min_threshold: float = 0.0
    """Client's `x-sidegate-cache-threshold` (it can only raise the route's threshold)."""
    lookup_failed: bool = False
    """The store did not answer the lookup in time: a miss that must not fill (it could overwrite
    a good entry the lookup could not read)."""
    search: Any = field(default=None, repr=False, compare=False)
    """The semantic search started early (ResponseCache.prefetch), for the lookup to await."""
    vector: list[float] | None = field(default=None, repr=False)
    """Embedding of `query_text`, kept from lookup so the fill does not embed twice."""
    endpoint: str = COMPLETIONS
    """What is cached: a completion, or embeddings (exact only: the whole `input` is the key)."""
    echo: dict[str, Any] | None = field(default=None, repr=False)
    """Responses API: the asking request's fields its answer echoes (metadata, user...), for a hit."""

    @classmethod
    def from_body(
        cls,
        api: Api,
        tenant: str,
        model: str,
        body: Mapping[str, Any],
        headers: Mapping[str, str] | None = None,
        endpoint: str = COMPLETIONS,
        stream: bool | None = None,
    ) -> CacheRequest:
        """`stream`: the client's stream flag where its body does not say it (a Gemini client's is
        in its path); None: the body's `stream`."""
        headers = headers or {}
        params = {k: v for k, v in body.items() if k not in IGNORED_FIELDS}
        temp = params.get("temperature")
        temperature = float(temp) if isinstance(temp, int | float) and not isinstance(temp, bool) else 1.0
        if endpoint == COMPLETIONS:
            params["temperature"] = temperature  # absent == 1.0 == 1 for both APIs
        else:  # embeddings: nothing is sampled, the same input always gets the same answer
            temperature = 0.0
        messages = params.get("messages")
        last_content: Any = None
        query_text: str | None = None
        if api is Api.RESPONSES:
            params, last_content, query_text = responses_params(params)
            last_content = _strip(last_content)
        elif api is Api.GEMINI:
            params, last_content, query_text, temperature = gemini_params(params)
            if endpoint == COMPLETIONS:
                params["temperature"] = temperature
        elif isinstance(messages, list) and messages and isinstance(messages[-1], dict):
            last = messages[-1]
            if last.get("role") == "user":
                last_content = _strip(last.get("content"))
                query_text = _text_of(last_content)
                stub = {k: v for k, v in last.items() if k != "content"}
                params["messages"] = [*messages[:-1], stub]
        scope_doc = {"api": str(api), "tenant": tenant, "model": model, "params": _strip(params)}
        if endpoint != COMPLETIONS:  # (a completion's keys stay what they were)
            scope_doc["endpoint"] = endpoint
        h = hashlib.sha256(KEY_VERSION)
        h.update(canonical(scope_doc))
        scope = h.hexdigest()
        exact = hashlib.sha256(KEY_VERSION + scope.encode() + b"\0" + canonical(last_content)).hexdigest()

        cc = _header(headers, "cache-control")
        directive = _header(headers, "x-sidegate-cache")
        no_store = "no-store" in cc or directive == "no-store"
        if api is Api.RESPONSES and body.get("conversation") is not None:
            # A conversation object is state on the provider's server that every turn appends to:
            # the same input in it is a different question each time, and a hit would skip the append.
            no_store = True
        bypass = no_store or "no-cache" in cc or directive == "bypass"
        min_threshold = 0.0
        raw = _header(headers, "x-sidegate-cache-threshold")
        if raw:
            try:
                value = float(raw)
            except ValueError:
                value = 0.0
            if 0.0 < value <= 1.0:
                min_threshold = value
        stream = body.get("stream") is True if stream is None else stream
        opts = body.get("stream_options")
        include_usage = stream and isinstance(opts, dict) and opts.get("include_usage") is True
        if query_text is not None:
            query_text = " ".join(query_text.split())
            if not query_text:
                query_text = None
        return cls(
            api=api, tenant=tenant, model=model, scope=scope, exact_key=exact, query_text=query_text,
            temperature=temperature, stream=stream, include_usage=include_usage,
            lookup_allowed=not bypass, fill_allowed=not no_store, min_threshold=min_threshold, endpoint=endpoint,
            echo=responses_echo(body) if api is Api.RESPONSES else None,
        )  # fmt: skip

    def threshold(self, policy: CachePolicy, model_default: float = MODELS[DEFAULT_MODEL].threshold) -> float:
        """The effective semantic threshold: the route's (else the model's), raised (never lowered)
        by the client."""
        return max(model_default if policy.threshold is None else policy.threshold, self.min_threshold)

    def allowed_by(self, policy: CachePolicy) -> bool:
        """True when the route caches this request at all (enabled and temperature low enough)."""
        return policy.enabled and self.temperature <= policy.max_temperature
