"""guard: PII redaction/blocking and prompt-injection detection, before anything is translated.

Redacted values are replaced by stable placeholders (`<EMAIL_1>`); with `restore` on, the mapping
travels to the per-try stage in the request's Envoy metadata (never logged: the access log names
the fields it prints) and the response gets the original values back, streams included.
"""

from __future__ import annotations

from typing import Any

from sidegate import metrics
from sidegate.config import SidegateConfig
from sidegate.core.context import Reply, RequestContext
from sidegate.core.feature import Feature
from sidegate.core.intake import COMPLETIONS, COUNT_TOKENS, EMBEDDINGS
from sidegate.errors import Api
from sidegate.features.guard import GuardBlocked, SseRestorer, guard_embeddings, guard_request, restore_body
from sidegate.features.guard.gemini_restore import GeminiSseRestorer
from sidegate.features.guard.responses_restore import ResponsesSseRestorer, restore_responses_body


class GuardFeature(Feature):
    name = "guard"
    endpoints = frozenset({COMPLETIONS, EMBEDDINGS, COUNT_TOKENS})
    """count_tokens too: a count forwarded to an Anthropic provider carries the whole prompt, so it
    is redacted (and blocked) as the Messages request it counts would be; the count is then of
    what that request sends."""

    def __init__(self, cfg: SidegateConfig):
        self.cfg = cfg

    def reconfigure(self, cfg: SidegateConfig) -> None:
        """A routing change: the policies (per model, the default) are the latest version's."""
        self.cfg = cfg

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        policy = self.cfg.guard_policy(ctx.model)
        if policy is None:
            return None
        try:  # embeddings: the policy's blocks and secret redaction only (see guard_embeddings)
            result = guard_embeddings(ctx.body, policy) if ctx.endpoint == EMBEDDINGS else guard_request(ctx.api, ctx.body, policy)
        except GuardBlocked as blocked:
            for key, n in blocked.result.counts().items():
                entity, _, action = key.partition(":")
                metrics.guard_action(entity, action, n)
            raise
        for key, n in result.counts().items():
            entity, _, action = key.partition(":")
            metrics.guard_action(entity, action, n)
        if result.flagged:
            metrics.guard_action("PROMPT_INJECTION", "flag")
            ctx.response_headers["x-sidegate-guard"] = "flagged"
        if result.changed:
            ctx.body_changed = True
            if policy.restore and result.restore_map:
                ctx.meta["restore"] = result.restore_map
        return None

    def on_try(self, meta: dict[str, Any], api: Api) -> PiiTry | None:
        """A try whose request was redacted: its answer gets the original values back. Behind the
        HTTP front (`redact`: the front cannot rewrite the body) the try redacts the body itself,
        with the same input and so the same placeholders as this feature's request hook."""
        restore = meta.get("restore")
        restore_map = restore if isinstance(restore, dict) else {}
        if not restore_map and not meta.get("redact"):
            return None
        return PiiTry(self.cfg, str(meta.get("model", "")), api, restore_map, bool(meta.get("redact")),
                      embeddings=meta.get("endpoint") == EMBEDDINGS)  # fmt: skip


class PiiTry:
    """The guard inside one provider try (a :class:`sidegate.core.feature.TryHook`)."""

    def __init__(self, cfg: SidegateConfig, model: str, api: Api, restore_map: dict[str, str], redact: bool,
                 embeddings: bool = False):  # fmt: skip
        self.embeddings = embeddings
        self.cfg = cfg
        self.model = model
        self.api = api
        self.restore_map = restore_map
        self.redact = redact
        self.sse: SseRestorer | ResponsesSseRestorer | GeminiSseRestorer | None = None

    def request(self, body: dict[str, Any]) -> None:
        if not self.redact:
            return
        policy = self.cfg.guard_policy(self.model)
        if policy is None:
            return
        result = guard_embeddings(body, policy) if self.embeddings else guard_request(self.api, body, policy)
        if policy.restore and result.restore_map:
            self.restore_map = result.restore_map

    def response(self, body: bytes) -> bytes:
        if not self.restore_map:
            return body
        if self.api is Api.RESPONSES:
            return restore_responses_body(body, self.restore_map)
        return restore_body(body, self.restore_map)

    def stream(self, chunk: bytes, end: bool) -> bytes:
        if not self.restore_map:
            return chunk
        if self.sse is None:
            if self.api is Api.RESPONSES:
                self.sse = ResponsesSseRestorer(self.restore_map)
            elif self.api is Api.GEMINI:
                self.sse = GeminiSseRestorer(self.restore_map)
            else:
                self.sse = SseRestorer(self.api, self.restore_map)
        return (self.sse.feed(chunk) if chunk else b"") + (self.sse.finish() if end else b"")
