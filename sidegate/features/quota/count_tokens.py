"""count_tokens: `POST /v1/messages/count_tokens` (Anthropic's shape), which coding agents call to
manage their context.

When the request's chain (from the start the breaker picked) begins with Anthropic providers, the
count is the provider's: the request goes on like any try (the per-try stage sends it to
`/v1/messages/count_tokens` with the Anthropic credential and the client's anthropic-version/beta
headers; `x-sidegate-token-count: provider`). Otherwise the gateway answers with its own
tokenizer's count, the quota's admission estimate (:class:`TokenCounter`), and says so in
`x-sidegate-token-count: estimate`. The estimate also travels with a forwarded count whose chain
falls back to a provider that is not Anthropic-shaped: a try that reaches one answers it
(sidegate/core/tries.py, `TryAnswered`), so a fallback never turns a count into an error.

A Gemini client's `POST /v1beta/models/{model}:countTokens` always gets the estimate, in Google's
shape (`{"totalTokens": N}`): forwarding it would need a Gemini provider first in the chain, and the
count is what the quota admits with anyway.

A count spends no provider tokens: never charged against quota, no ledger record, no metrics of a
completion (it is not a metered endpoint: sidegate/core/intake.py). It lives in the quota package
because it is the quota's tokenizer that answers.
"""

from __future__ import annotations

import orjson

from sidegate.config import SidegateConfig
from sidegate.core.context import Reply, RequestContext
from sidegate.core.feature import Feature
from sidegate.core.intake import COUNT_TOKENS
from sidegate.errors import Api
from sidegate.features.quota.tokens import TokenCounter
from sidegate.wire import TOKEN_COUNT_HEADER as COUNT_HEADER


def anthropic_starts(cfg: SidegateConfig) -> dict[tuple[str, int], bool]:
    """(model, chain start) whose first try is an Anthropic provider (every provider of that
    priority group is one) -> whether a later try may reach one that is not."""
    out = {}
    for model, m in cfg.models.items():
        groups = m.groups()
        for start in range(len(groups)):
            if all(cfg.providers[r.provider].api is Api.ANTHROPIC for r in groups[start]):
                out[(model, start)] = any(
                    cfg.providers[r.provider].api is not Api.ANTHROPIC for g in groups[start:] for r in g
                )
    return out


class CountTokensFeature(Feature):
    name = "count_tokens"
    endpoints = frozenset({COUNT_TOKENS})

    def __init__(self, cfg: SidegateConfig, counter: TokenCounter | None = None):
        self.counter = counter if counter is not None else TokenCounter(cfg.quota.tokenizer)
        self.forward = anthropic_starts(cfg)

    def reconfigure(self, cfg: SidegateConfig) -> None:
        self.forward = anthropic_starts(cfg)

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        if ctx.api is Api.GEMINI:  # `:countTokens`: always the estimate (it spends nothing, needs no provider)
            n = await self.counter.count_async(Api.GEMINI, ctx.body, len(ctx.raw_body))
            headers = {"content-type": "application/json", COUNT_HEADER: "estimate", **ctx.response_headers}
            return Reply(200, orjson.dumps({"totalTokens": n}), headers)
        mixed = self.forward.get((ctx.model, int(ctx.meta.get("start", 0))))
        if mixed is False:  # every try is Anthropic's
            return None
        n = await self.counter.count_async(Api.ANTHROPIC, ctx.body, len(ctx.raw_body))
        if mixed:  # forwarded; a fallback to a provider that cannot count answers this estimate
            ctx.meta["count_estimate"] = n
            return None
        headers = {"content-type": "application/json", COUNT_HEADER: "estimate", **ctx.response_headers}
        return Reply(200, orjson.dumps({"input_tokens": n}), headers)
