"""Routing policies: which provider a request tries first (docs/routing.md).

In order: the client's `x-sidegate-provider` (when the model's policy allows it), the tenant's
provider (`policy.tenants`), then the policy's kind:

- `ordered`: the chain as configured (priorities, weights): the route value is the model's own,
  or `model#N` past ejected priority groups (the breaker), exactly as without a policy;
- `cost`: the route whose provider-side model makes this request cheapest, from the price table:
  estimated input tokens * input price + expected output tokens * output price. An unpriced route
  counts as the most expensive (never picked over a priced one);
- `latency`: the lowest `ttft_ewma * (1 + 4 * error_ewma)` over every replica's fresh stats
  (latency.py); providers without fresh stats are explored first.

The breaker's ejections apply to every choice: an ejected provider is passed over for the next
best healthy one (reason `breaker:skip`). A choice other than the chain's own order is a pinned
route value, `model@provider` (sidegate/wire.py): Envoy tries that provider first, then the
chain's other routes in their configured groups. Every request's policy and reason go into the
gateway's metadata (`policy`, `reason`: the access log's fields) and
`sidegate_route_decisions_total`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from sidegate import metrics
from sidegate.config import ModelConfig, SidegateConfig
from sidegate.core.context import RequestContext
from sidegate.core.intake import EMBEDDINGS
from sidegate.errors import Api, GatewayError
from sidegate.features.route.breaker import Breaker
from sidegate.features.route.latency import LatencyBoard
from sidegate.wire import PROVIDER_OVERRIDE_HEADER, pinned_route_value, route_value

CHARS_PER_TOKEN = 4
"""Input tokens are estimated from the request body's size (the quota's exact count comes later in
the pipeline, and a second tokenization here would double the cost): the JSON's markup makes it an
overestimate, the same one for every route, so the ranking holds."""
MAX_COUNTERS = 4096
WEIGHTED = "weighted"
"""The decisions metric's provider label of an ordered start whose priority group is load balanced."""


class Policy:
    """Picks the first provider of a request; the per-process state it needs (the breaker, the
    latency board) lives here, the per-version config comes with every call."""

    def __init__(self, breaker: Breaker, latency: LatencyBoard, clock: Any = time.monotonic):
        self.breaker = breaker
        self.latency = latency
        self.clock = clock
        self._counters: dict[tuple[str, str, str, str], Callable[[], None]] = {}
        """Each decision's counter, by its raw labels (bounding labels costs a few µs per request)."""
        self._counted_for: object = None

    def choose(self, ctx: RequestContext, m: ModelConfig, cfg: SidegateConfig) -> str:
        """The route value for `ctx` (its model's config `m`, the config version `cfg` it is routed
        with); records the decision in `ctx.meta` and the metric. Raises GatewayError (400) for an
        override header naming a provider that is not in the chain."""
        model, p = ctx.model, m.policy
        if cfg is not self._counted_for:  # another config version: its models may be labelled otherwise
            self._counters.clear()
            self._counted_for = cfg
        if not m.pins:
            return self._ordered(ctx, m, p.kind)
        skipped = False
        if p.override_header and PROVIDER_OVERRIDE_HEADER in ctx.headers:
            named = ctx.headers[PROVIDER_OVERRIDE_HEADER].strip()
            if not any(r.provider == named for r in m.routes):
                raise GatewayError(
                    400, f"{PROVIDER_OVERRIDE_HEADER}: '{named[:100]}' is not a provider of the model '{model}' "
                    f"(its providers: {', '.join(r.provider for r in m.routes)}).",
                    code="invalid_provider", param=PROVIDER_OVERRIDE_HEADER,
                )  # fmt: skip
            if not self.breaker.ejected(named, model):
                return self._pin(ctx, p.kind, named, "override:header")
            skipped = True
        tenant_pick = p.tenants.get(ctx.tenant) if ctx.tenant else None
        if tenant_pick is not None:
            if not self.breaker.ejected(tenant_pick, model):
                return self._pin(ctx, p.kind, tenant_pick, "override:tenant")
            skipped = True
        if p.kind == "cost":
            ranked = self._by_cost(ctx, m, cfg)
            if ranked and math.isinf(ranked[0][0]):
                return self._best(ctx, m, "cost", ranked, "cost:unpriced", skipped)
            return self._best(ctx, m, "cost", ranked, "cost:cheapest", skipped)
        if p.kind == "latency":
            return self._by_latency(ctx, m, skipped)
        return self._ordered(ctx, m, p.kind, skipped)

    # -- the kinds ----------------------------------------------------------------------------
    def _ordered(self, ctx: RequestContext, m: ModelConfig, kind: str, skipped: bool = False) -> str:
        """Today's route values: the chain from its first priority group with a healthy provider."""
        groups = m.groups()
        start = self.breaker.first_healthy(groups, ctx.model)
        if start:
            ctx.meta["start"] = start
        group = groups[start]
        reason = "breaker:skip" if start or skipped else "ordered"
        self._record(ctx, kind, reason, group[0].provider if len(group) == 1 else WEIGHTED)
        return route_value(ctx.model, start)

    def _by_cost(
        self, ctx: RequestContext, m: ModelConfig, cfg: SidegateConfig
    ) -> list[tuple[float, int, str]]:
        """(estimated USD, position, provider), cheapest first; unpriced routes last (inf)."""
        tokens_in = len(ctx.raw_body) / CHARS_PER_TOKEN
        tokens_out = (
            0 if ctx.endpoint == EMBEDDINGS else expected_output(ctx.body, m.default_max_tokens, ctx.api)
        )
        out = []
        for i, r in enumerate(m.routes):
            price = cfg.quota.price(r.model or ctx.model)
            usd = (
                math.inf
                if price is None
                else (tokens_in * price.input_per_mtok + tokens_out * price.output_per_mtok) / 1e6
            )
            out.append((usd, i, r.provider))
        out.sort()
        return out

    def _by_latency(self, ctx: RequestContext, m: ModelConfig, skipped: bool) -> str:
        model, board = ctx.model, self.latency
        board.want(model)
        now = self.clock()
        measured: list[tuple[float, int, str]] = []
        unmeasured: list[str] = []
        for i, r in enumerate(m.routes):
            s = board.score(model, r.provider)
            if s is None:
                unmeasured.append(r.provider)
            else:
                measured.append((s, i, r.provider))
        measured.sort()
        healthy_measured = any(
            not self.breaker.ejected(p, model) and not math.isinf(s) for s, _, p in measured
        )
        explorable = [p for p in unmeasured if not self.breaker.ejected(p, model)]
        if explorable:
            if not healthy_measured:  # nothing known to work: the unmeasured take turns
                pick = min(explorable, key=lambda p: board.last_explored(model, p))
            else:  # one exploring request per provider per EXPLORE_S, the rest go to the fastest
                pick = next((p for p in explorable if board.may_explore(model, p, now)), "")
            if pick:
                board.explore(model, pick, now)
                return self._pin(ctx, "latency", pick, "latency:explore")
        return self._best(ctx, m, "latency", measured, "latency:fastest", skipped)

    def _best(self, ctx: RequestContext, m: ModelConfig, kind: str, ranked: list[tuple[float, int, str]],
              reason: str, skipped: bool) -> str:  # fmt: skip
        """The first healthy provider of `ranked`; the whole ranking ejected (or empty): the chain's order."""
        for n, (_, _, provider) in enumerate(ranked):
            if not self.breaker.ejected(provider, ctx.model):
                return self._pin(ctx, kind, provider, "breaker:skip" if n or skipped else reason)
        return self._ordered(ctx, m, kind, skipped)

    def _pin(self, ctx: RequestContext, kind: str, provider: str, reason: str) -> str:
        ctx.meta["pin"] = provider
        self._record(ctx, kind, reason, provider)
        return pinned_route_value(ctx.model, provider)

    def _record(self, ctx: RequestContext, kind: str, reason: str, provider: str) -> None:
        ctx.meta["policy"] = kind
        ctx.meta["reason"] = reason
        key = (ctx.model, kind, provider, reason)
        count = self._counters.get(key)
        if count is None:
            count = metrics.route_decision(*key)
            if len(self._counters) < MAX_COUNTERS:
                self._counters[key] = count
        count()


def expected_output(body: dict[str, Any], default: int, api: Api) -> int:
    """The output tokens the request allows (its max tokens field, times its choices), else the
    model's `default_max_tokens`: what a pessimistic client pays for, as the quota reserves it."""
    if api is Api.GEMINI:
        config = body.get("generationConfig", body.get("generation_config"))
        config = config if isinstance(config, dict) else {}
        value, n = (
            config.get("maxOutputTokens", config.get("max_output_tokens")),
            config.get("candidateCount"),
        )
    else:
        value = next(
            (
                v
                for k in ("max_completion_tokens", "max_tokens", "max_output_tokens")
                if (v := body.get(k)) is not None
            ),
            None,
        )
        n = body.get("n")
    out = value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default
    return out * n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else out
