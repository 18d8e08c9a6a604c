"""quota: count the prompt, reserve prompt + max output tokens across the request's scopes
(tenant, its team and user, key, tenant+model) atomically in the store; 429 with rate-limit headers when over.

The reservation travels in the metadata; the completion hook replaces it with the provider's real
usage when the final try ends, also for aborted and failed requests. Live tenant limits are polled
from the store in the background; with leases on, admissions are granted locally from leases.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sidegate import metrics
from sidegate.config import SidegateConfig
from sidegate.core.completion import Completion
from sidegate.core.context import Reply, RequestContext
from sidegate.core.feature import Feature, close_each
from sidegate.core.intake import COMPLETIONS, EMBEDDINGS
from sidegate.core.pricing import Pricing
from sidegate.features.quota import QuotaStore, TokenCounter, build_scopes, max_output_tokens, rejection_error
from sidegate.features.quota.lease import LeasedQuota
from sidegate.features.quota.store import Reservation
from sidegate.features.quota.tenants import TenantQuotas
from sidegate.store import Store

log = logging.getLogger("sidegate.quota")


class QuotaFeature(Feature):
    name = "quota"
    endpoints = frozenset({COMPLETIONS, EMBEDDINGS})

    def __init__(self, cfg: SidegateConfig, store: QuotaStore | LeasedQuota, tenants: TenantQuotas):
        self.cfg = cfg
        self.policy = cfg.quota
        self.store = store
        self.tenants = tenants
        self.counter = TokenCounter(cfg.quota.tokenizer)
        self.cost = Pricing(cfg.quota.prices)
        self._settles: set[asyncio.Task[Any]] = set()
        self._tenants_task: asyncio.Task[None] | None = None

    def reconfigure(self, cfg: SidegateConfig) -> None:
        """A routing change: the cost estimate reads the latest price table (the rest of the quota
        policy is the file's: it is not part of the routing document)."""
        self.cfg = cfg
        self.cost = Pricing(cfg.quota.prices)

    @classmethod
    def from_config(cls, cfg: SidegateConfig, store: Store | None = None) -> QuotaFeature | None:
        """On whenever there is a store (every tenant has limits, if only the defaults)."""
        if store is None:
            return None
        quota: QuotaStore | LeasedQuota = QuotaStore.from_policy(store, cfg.quota, fail_mode=cfg.store.fail_mode)
        if cfg.quota.lease.enabled:
            quota = LeasedQuota(quota, cfg.quota.lease)
        return cls(cfg, quota, TenantQuotas(cfg, store.redis))

    async def start(self) -> None:
        self._tenants_task = asyncio.create_task(self.tenants.run())

    async def close(self, timeout_s: float = 5.0) -> None:
        """The settles still running are waited for (bounded), then the leases are ended."""
        if self._tenants_task is not None:
            self._tenants_task.cancel()
        store = self.store

        async def settles() -> None:
            if self._settles:
                await asyncio.wait(list(self._settles), timeout=timeout_s)

        await close_each(settles, *([store.close] if isinstance(store, LeasedQuota) else []))

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        m = ctx.model_config
        embeddings = ctx.endpoint == EMBEDDINGS
        prompt = await self.counter.count_async(ctx.api, ctx.body, len(ctx.raw_body), embeddings=embeddings)
        if embeddings:  # input tokens only: an embedding generates none
            tokens = prompt
        else:
            default_out = m.default_max_tokens if m is not None else self.policy.default_max_output_tokens
            tokens = prompt + max_output_tokens(ctx.body, default_out, ctx.api)
        t = self.tenants
        scopes = build_scopes(ctx.tenant, t.get(ctx.tenant), key_id=ctx.key_id, model=ctx.model,
                              default_limits=self.policy.default_limits,
                              team=ctx.team, team_limits=t.team(ctx.tenant, ctx.team) if ctx.team else None,
                              user=ctx.user, user_limits=t.user(ctx.tenant, ctx.user) if ctx.user else None)  # fmt: skip
        decision = await self.store.reserve(ctx.tenant, scopes, tokens, ctx.request_id or "-")
        ctx.response_headers.update(decision.headers())
        if decision.degraded:  # admitted because the store was unreachable (fail_mode: open)
            metrics.store_error("extproc", "quota")
        if not decision.admitted:
            metrics.quota_rejection(decision.scope or "tenant", ctx.tenant)
            err = rejection_error(decision)
            err.headers = {**ctx.response_headers, **err.headers}
            raise err
        r = decision.reservation
        if r is not None:
            q = {"tenant": r.tenant, "request_id": r.request_id, "scopes": list(r.scopes), "tokens": r.tokens,
                 "degraded": r.degraded, "prompt": prompt}  # fmt: skip
            if r.bucket is not None:  # admitted from a lease: the true-up goes to its bucket
                q["bucket"] = r.bucket
            ctx.meta["quota"] = q
        return None

    def on_complete(self, c: Completion) -> None:
        """Settles the reservation once, when the request's outcome is known."""
        if not c.final:
            return  # Envoy retries this error on the next provider: that try settles
        r = _reservation(c.meta)
        if r is None:
            return
        if c.usage is not None:
            actual = c.usage.total_tokens
        elif c.provider in ("cache", "gateway"):
            actual = 0  # answered by the gateway: no provider tokens
        elif c.meta.get("endpoint") == EMBEDDINGS and 200 <= c.status < 300 and not c.aborted:
            # Embedded, but the provider's answer carried no usage (some OpenAI-shaped servers
            # leave it out): the input tokens counted at admission are what it spent.
            actual = int(c.meta.get("quota", {}).get("prompt", 0))
        elif c.streamed and c.chunks > 0:
            # The client went away, or the provider's stream broke, before the provider's usage
            # arrived: prompt + one token per streamed content chunk (OpenAI-style deltas carry
            # about one token each).
            actual = int(c.meta.get("quota", {}).get("prompt", 0)) + c.chunks
        else:
            actual = 0  # the provider failed: nothing was generated
        cost = self.cost(c)
        task = asyncio.get_running_loop().create_task(self.store.settle(r, actual, cost))
        self._settles.add(task)
        task.add_done_callback(self._settles.discard)


def _reservation(meta: dict[str, Any]) -> Reservation | None:
    q = meta.get("quota")
    if not isinstance(q, dict):
        return None
    bucket = q.get("bucket")
    return Reservation(tenant=str(q["tenant"]), request_id=str(q["request_id"]), scopes=tuple(q["scopes"]),
                       tokens=int(q["tokens"]), degraded=bool(q.get("degraded")),
                       bucket=None if bucket is None else int(bucket))  # fmt: skip
