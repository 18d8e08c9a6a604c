"""Local admission: leases of the global limits, so a busy scope set's requests skip the store.

A *lease* is an ordinary all-or-nothing reservation of R requests and T tokens, made by the same
store script as a request's (so every scope's global limit holds, across all gateways). While it
lasts (``ttl_ms``, and never past the end of its bucket: what it admits counts in that bucket), this
process admits requests of that scope set from it without a store round trip. What a lease did not
use is given back when it ends, by settling the lease's own reservation record. Each admitted
request's true-up (real minus estimated tokens, spend) goes to the lease's bucket: true-ups are
summed per (tenant, scopes, bucket) and written every ``flush_ms`` in one idempotent script call
each (``quota_settle.lua``, mode ``a``).

Leases are asked for only where they pay: for scope sets that saw at least ``min_requests / 2``
requests in the last lease period, at twice that rate. The store cuts each lease to ``share`` of
what the scopes have left when it grants it, and refuses it below ``min_requests``: a scope set
near its limit gets no lease, and its requests reserve in the store one by one, exactly as without
leases. A request that does not fit what is left of the lease (its token estimate) reserves in the
store too, and so does every request while the store fails (``store.fail_mode`` applies to them as
without leases).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sidegate import metrics
from sidegate.config.quota import LeasePolicy, Scope
from sidegate.features.quota.store import STORE_ERRORS, Decision, QuotaStore, Reservation, unique_scopes

_MAX_DEMAND_KEYS = 10_000


@dataclass(slots=True)
class _Lease:
    record: Reservation
    """The lease's own reservation in the store (tenant, scopes, bucket, the requests and tokens
    granted), settled when the lease ends."""
    decision: Decision
    """The store's answer when the lease was taken: the limits, and what the scopes had left
    besides the lease (the rate-limit headers of requests admitted from it)."""
    expires: float
    """At most ttl_ms, and never past the end of the lease's bucket: what it admits counts in that
    bucket, so for at least one window, like every request."""
    requests: int
    """Requests left."""
    tokens: int
    """Tokens left."""
    renewing: bool = False
    """The next lease was asked for (once per lease)."""
    ended: bool = False

    @property
    def granted(self) -> int:
        return self.record.requests


@dataclass(slots=True)
class _Demand:
    since: float
    count: int = 0
    last: int = 0
    no_lease_until: float = 0.0
    """After the store refused a lease (too little left): no new ask for one lease period, or a
    scope set near its limit would pay a lease call besides each request's reservation."""


class LeasedQuota:
    """A :class:`QuotaStore` front with the same ``reserve`` / ``settle``, admitting from leases."""

    def __init__(self, store: QuotaStore, policy: LeasePolicy) -> None:
        self.store = store
        self.policy = policy
        bucket_ms = store.window_ms // store.buckets
        self.ttl_s = min(policy.ttl_ms, bucket_ms) / 1000
        self.flush_s = policy.flush_ms / 1000
        self._leases: dict[tuple[str, tuple[Scope, ...]], _Lease] = {}
        self._taking: set[tuple[str, tuple[Scope, ...]]] = set()
        self._demand: dict[tuple[str, tuple[Scope, ...]], _Demand] = {}
        self._deltas: dict[tuple[str, tuple[str, ...], int], list[Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._closed = False
        self.local_admits = 0
        self.leases_taken = 0

    # -- admission ----------------------------------------------------------------------------

    async def reserve(self, tenant: str, scopes: Sequence[Scope], tokens: int, request_id: str) -> Decision:
        tokens = max(int(tokens), 0)
        unique = tuple(unique_scopes(scopes))
        key = (tenant, unique)  # scopes carry their limits: changed limits never use an old lease
        now = asyncio.get_running_loop().time()
        rate = self._count(key, now)
        lease = self._leases.get(key)
        if lease is not None:
            # While the store fails, requests take the store's way (and its fail mode) too.
            if lease.expires <= now or lease.requests <= 0 or self.store.down:
                self._end(key, lease)
            elif lease.tokens >= tokens:
                lease.requests -= 1
                lease.tokens -= tokens
                self.local_admits += 1
                if lease.requests * 4 < lease.granted and not lease.renewing:  # the next one before it runs out
                    lease.renewing = True
                    self._take(key, tenant, unique, tokens, rate)
                return self._admit(lease, tokens)
        d = await self.store.reserve(tenant, unique, tokens, request_id)
        if d.admitted and not d.degraded and key not in self._leases:
            self._take(key, tenant, unique, tokens, rate)
        return d

    def _count(self, key: tuple[str, tuple[Scope, ...]], now: float) -> int:
        """Requests of this scope set in the current lease period (or the last one, if more)."""
        d = self._demand.get(key)
        if d is None:
            if len(self._demand) >= _MAX_DEMAND_KEYS:
                self._demand.clear()
            d = self._demand[key] = _Demand(now)
        elif now - d.since >= self.ttl_s:
            d.last = d.count if now - d.since < 2 * self.ttl_s else 0
            d.since, d.count = now, 0
        d.count += 1
        return max(d.count, d.last)

    def _take(self, key: tuple[str, tuple[Scope, ...]], tenant: str, scopes: tuple[Scope, ...], tokens: int,
              rate: int) -> None:  # fmt: skip
        """Ask for a lease in the background: twice the recent rate, for requests like this one; the
        store cuts it to `share` of what is left, or refuses it when that is too little."""
        p = self.policy
        requests = min(p.max_requests, 2 * rate)
        if requests < p.min_requests or key in self._taking or self._closed:
            return
        demand = self._demand.get(key)
        if demand is not None and demand.no_lease_until > asyncio.get_running_loop().time():
            return
        per = max(tokens, 1)
        self._taking.add(key)
        self._spawn(self._take_now(key, tenant, scopes, requests, requests * per, per * p.min_requests))

    async def _take_now(self, key: tuple[str, tuple[Scope, ...]], tenant: str, scopes: tuple[Scope, ...],
                        requests: int, tokens: int, min_tokens: int) -> None:  # fmt: skip
        loop = asyncio.get_running_loop()
        asked = loop.time()  # before the store's clock read the bucket: the lease ends early, never late
        try:
            d = await self.store.take_lease(tenant, scopes, requests, tokens, self.policy.share,
                                            self.policy.min_requests, min_tokens)  # fmt: skip
        except STORE_ERRORS:
            return  # the store's trouble shows on the requests' own reservations
        finally:
            self._taking.discard(key)
        r = d.reservation
        if not d.admitted or r is None or r.bucket is None:
            demand = self._demand.get(key)
            if demand is not None:
                demand.no_lease_until = loop.time() + self.ttl_s
            return  # no room for a lease: requests reserve one by one
        lease = _Lease(r, d, asked + min(self.ttl_s, r.bucket_left_s), r.requests, r.tokens)
        self.leases_taken += 1
        if self._closed or lease.expires <= loop.time():
            self._end(key, lease)  # shutting down, or its bucket is over already: give it back
            return
        old = self._leases.get(key)
        if old is not None:
            self._end(key, old)
        self._leases[key] = lease
        self._tick()

    def _admit(self, lease: _Lease, tokens: int) -> Decision:
        base = lease.decision
        d = Decision(
            True,
            limit_requests=base.limit_requests,
            remaining_requests=None if base.remaining_requests is None else base.remaining_requests + lease.requests,
            reset_requests_s=base.reset_requests_s,
            limit_tokens=base.limit_tokens,
            remaining_tokens=None if base.remaining_tokens is None else base.remaining_tokens + lease.tokens,
            reset_tokens_s=base.reset_tokens_s,
        )
        r = lease.record
        d.reservation = Reservation(r.tenant, "lease", r.scopes, tokens, bucket=r.bucket)
        return d

    def _end(self, key: tuple[str, tuple[Scope, ...]], lease: _Lease) -> None:
        """Give back what the lease did not use."""
        if self._leases.get(key) is lease:
            del self._leases[key]
        if lease.ended:
            return
        lease.ended = True
        metrics.quota_lease_ended(lease.granted - lease.requests)
        self._spawn(self.store.end_lease(lease.record, lease.requests, lease.tokens))
        lease.requests = lease.tokens = 0

    # -- settlement ---------------------------------------------------------------------------

    async def settle(self, target: Decision | Reservation, actual_tokens: int, cost_usd: float, *,
                     release_request: bool = False) -> str:  # fmt: skip
        """As :meth:`QuotaStore.settle`; a request admitted from a lease (by any process) is queued
        for the next batch (``queued``)."""
        res = target.reservation if isinstance(target, Decision) else target
        if res is None or res.bucket is None or not res.scopes:
            return await self.store.settle(target, actual_tokens, cost_usd, release_request=release_request)
        if res.settled:
            return "duplicate"
        res.settled = True
        self._queue(res.tenant, res.scopes, res.bucket, 1 if release_request else 0,
                    max(int(actual_tokens), 0) - res.tokens, cost_usd)  # fmt: skip
        return "queued"

    def _queue(self, tenant: str, names: tuple[str, ...], bucket: int, requests_back: int, tokens: int,
               cost_usd: float) -> None:  # fmt: skip
        k = (tenant, names, bucket)
        acc = self._deltas.get(k)
        if acc is None:
            self._deltas[k] = [requests_back, tokens, cost_usd]
        else:
            acc[0] += requests_back
            acc[1] += tokens
            acc[2] += cost_usd
        self._tick()

    # -- background ---------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _tick(self) -> None:
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while self._leases or self._deltas:
                await asyncio.sleep(self.flush_s)
                now = asyncio.get_running_loop().time()
                for key, lease in list(self._leases.items()):
                    if lease.expires <= now:
                        self._end(key, lease)
                self._flush()
        finally:
            self._ticker = None

    def _flush(self) -> None:
        """One adjust per (tenant, scopes, bucket); the store retries it under its batch id."""
        batch, self._deltas = self._deltas, {}
        for (tenant, names, bucket), (requests_back, tokens, cost) in batch.items():
            if requests_back or tokens or cost:
                self._spawn(self.store.adjust(tenant, names, bucket, requests_back, tokens, cost))

    async def close(self, timeout_s: float = 5.0) -> None:
        """End every lease and write what is queued (shutdown); a lease granted meanwhile is given
        back as it arrives."""
        self._closed = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            for key, lease in list(self._leases.items()):
                self._end(key, lease)
            self._flush()
            left = deadline - loop.time()
            if not self._tasks or left <= 0:
                break
            await asyncio.wait(list(self._tasks), timeout=left)
        if self._ticker is not None:
            self._ticker.cancel()
