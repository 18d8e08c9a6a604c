"""guard: PII redaction/blocking and prompt-injection detection, before anything is translated.

Redacted values are replaced by stable placeholders (`<EMAIL_1>`); with `restore` on, the mapping
travels to the per-try stage in the request's Envoy metadata (never logged: the access log names
the fields it prints) and the response gets the original values back, streams included.
"""

from __future__ import annotations

from sidegate import metrics
from sidegate.config import SidegateConfig
from sidegate.core.context import Reply, RequestContext
from sidegate.core.feature import Feature
from sidegate.features.guard import GuardBlocked, guard_request


class GuardFeature(Feature):
    name = "guard"

    def __init__(self, cfg: SidegateConfig):
        self.cfg = cfg

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        policy = self.cfg.guard_policy(ctx.model)
        if policy is None:
            return None
        try:
            result = guard_request(ctx.api, ctx.body, policy)
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
