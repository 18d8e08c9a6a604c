"""The store-facing quota core: atomic multi-scope reservations, settlement, usage.

All of a tenant's keys share the hash tag ``{<namespace>:<tenant>}`` so one script can touch them
on Redis Cluster and Dragonfly. Time is the store's (``TIME`` inside the scripts).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from redis.exceptions import RedisError

from sidegate.config.quota import QuotaPolicy, Scope
from sidegate.errors import GatewayError
from sidegate.features.quota.headers import Decision, Reservation
from sidegate.features.quota.scripts import quota_script
from sidegate.ids import UniqueIds
from sidegate.store import LuaScript, Store

log = logging.getLogger("sidegate.quota")

FailMode = Literal["open", "closed"]
_NANO = 1_000_000_000
_INDEX_TTL_MS = 62 * 86_400_000
_SPEND_TTL_MS = 40 * 86_400_000
STORE_ERRORS = (RedisError, OSError, asyncio.TimeoutError)

_RESERVATION_IDS = UniqueIds()
_ADJUST_IDS = UniqueIds()


@dataclass(slots=True)
class QuotaCounters:
    """Process-local counters for metrics."""

    store_errors: int = 0
    fail_open_admits: int = 0
    fail_closed_rejects: int = 0
    settle_errors: int = 0


def _opt(v: float | None, scale: int = 1) -> int:
    return -1 if v is None else round(v * scale)


def unique_scopes(scopes: Sequence[Scope]) -> list[Scope]:
    """First scope of each name, in order: a scope named twice would count twice."""
    seen: set[str] = set()
    out = []
    for s in scopes:
        if s.name not in seen:
            seen.add(s.name)
            out.append(s)
    return out


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class QuotaStore:
    """Requests-, tokens- and spend-limits over a Redis-protocol store (the process's store client).

    ``fail_mode="open"`` admits (and counts) when the store fails; ``"closed"`` raises a 503
    :class:`GatewayError`. Each store call is bounded by ``op_timeout_s`` whatever the client's
    retry policy, and a restarted store is picked up again without recreating this object.
    """

    def __init__(
        self,
        store: Store,
        *,
        fail_mode: FailMode = "open",
        namespace: str = "sg",
        window_s: float = 60.0,
        buckets: int = 60,
        reservation_ttl_s: float = 3600.0,
        op_timeout_s: float = 0.5,
    ) -> None:
        if fail_mode not in ("open", "closed"):
            raise ValueError("fail_mode must be 'open' or 'closed'")
        window_ms = round(window_s * 1000)
        if window_ms <= 0 or not 1 <= buckets <= 1000 or window_ms % buckets:
            raise ValueError("window_s * 1000 must be a positive multiple of buckets (1..1000)")
        self.store = store
        self.fail_mode = fail_mode
        self.namespace = namespace
        self.window_ms = window_ms
        self.buckets = buckets
        # A record must outlive its bucket, or a timely settle could not refund it.
        self.reservation_ttl_ms = max(round(reservation_ttl_s * 1000), window_ms + window_ms // buckets)
        self.op_timeout_s = op_timeout_s
        self.counters = QuotaCounters()
        self._down = False
        self._reserve = quota_script("reserve")
        self._settle = quota_script("settle")
        self._usage = quota_script("usage")
        self._pending: set[asyncio.Task[None]] = set()
        """Background cancels of reserve calls that failed on the client side."""

    @classmethod
    def from_policy(cls, store: Store, policy: QuotaPolicy, *, fail_mode: FailMode = "open",
                    namespace: str = "sg") -> QuotaStore:  # fmt: skip
        return cls(
            store,
            fail_mode=fail_mode,
            namespace=namespace,
            window_s=policy.window_s,
            buckets=policy.buckets,
            reservation_ttl_s=policy.reservation_ttl_s,
            op_timeout_s=policy.op_timeout_s,
        )

    @property
    def down(self) -> bool:
        """The last store call failed (and none succeeded since)."""
        return self._down

    @property
    def script_reloads(self) -> int:
        return self._reserve.reloads + self._settle.reloads + self._usage.reloads

    async def load_scripts(self) -> bool:
        """SCRIPT LOAD all scripts (at startup; optional, NOSCRIPT reloads lazily). False if the store is down."""
        try:
            async with asyncio.timeout(self.op_timeout_s * 3):
                for script in (self._reserve, self._settle, self._usage):
                    await self.store.load_script(script)
            return True
        except STORE_ERRORS as e:
            self._failed(e)
            return False

    # -- keys ---------------------------------------------------------------------------------

    def _tag(self, tenant: str) -> str:
        if not tenant or "{" in tenant or "}" in tenant:
            raise ValueError("tenant ids must be non-empty and must not contain braces")
        return f"{{{self.namespace}:{tenant}}}"

    def _scope_keys(self, tag: str, scope: str) -> tuple[str, str]:
        return f"{tag}:w:{scope}", f"{tag}:usd:{scope}"

    # -- health -------------------------------------------------------------------------------

    def _failed(self, exc: BaseException) -> None:
        self.counters.store_errors += 1
        if not self._down:
            self._down = True
            # The exception type only: messages may carry addresses; keys and prompts never logged.
            log.warning("quota store unavailable (%s); failing %s", type(exc).__name__, self.fail_mode)

    def _ok(self) -> None:
        if self._down:
            self._down = False
            log.info("quota store reachable again")

    async def _call(self, script: LuaScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        result = await self.store.run_script(script, keys, args, self.op_timeout_s)
        self._ok()
        return result

    # -- API ----------------------------------------------------------------------------------

    async def reserve(self, tenant: str, scopes: Sequence[Scope], tokens: int, request_id: str) -> Decision:
        """Admit one request of ``tokens`` (prompt + max output) against every scope, or none.

        Rejected requests consume nothing anywhere. Raises :class:`GatewayError` (503) only when
        the store fails and ``fail_mode`` is ``closed``.
        """
        tokens = max(int(tokens), 0)
        scopes = unique_scopes(scopes)
        names = tuple(s.name for s in scopes)
        res_id = f"{request_id[:64]}:{_RESERVATION_IDS()}"  # request ids may come from clients
        if not scopes:
            return Decision(True, reservation=Reservation(tenant, res_id, names, tokens))
        try:
            out = await self._reserve_call(tenant, scopes, res_id, tokens, (1, 0, 1, 0))
        except STORE_ERRORS:
            if self.fail_mode == "closed":
                self.counters.fail_closed_rejects += 1
                raise GatewayError(
                    503, "Rate limit service unavailable, please retry.", code="quota_store_unavailable",
                    headers={"retry-after": "1"},
                ) from None  # fmt: skip
            self.counters.fail_open_admits += 1
            return Decision(
                True, reservation=Reservation(tenant, res_id, names, tokens, degraded=True), degraded=True
            )
        return self._decision(tenant, res_id, scopes, tokens, out)

    async def take_lease(self, tenant: str, scopes: Sequence[Scope], requests: int, tokens: int, share: float,
                         min_requests: int, min_tokens: int) -> Decision:  # fmt: skip
        """Reserve a lease (sidegate/features/quota/lease.py): at most ``requests`` and ``tokens``, each cut
        in the store to ``share`` of what every limited scope has left, or nothing when that is less
        than ``min_requests`` / ``min_tokens`` (or a limit refuses). The reservation holds what was
        granted (``requests``, ``tokens``), its bucket, and ``bucket_left_s``. Raises the store's
        errors (no fail mode applies: requests then reserve one by one)."""
        scopes = unique_scopes(scopes)
        res_id = f"lease:{_RESERVATION_IDS()}"
        out = await self._reserve_call(tenant, scopes, res_id, tokens, (requests, share, min_requests, min_tokens))
        if _s(out[1]) == "lease":
            return Decision(False, reason="lease")  # too little left for a lease
        d = self._decision(tenant, res_id, scopes, tokens, out)
        r = d.reservation
        if r is not None:
            r.requests, r.tokens, r.bucket = int(out[-2]), int(out[-1]), int(out[4])
            # Time left in the lease's bucket by the store's clock: reset of a scope written now,
            # less one window (the same for every scope).
            r.bucket_left_s = max(int(out[7]) - self.window_ms, 0) / 1000
        return d

    async def _reserve_call(self, tenant: str, scopes: list[Scope], res_id: str, tokens: int,
                            lease: tuple[int, float, int, int]) -> list[Any]:  # fmt: skip
        tag = self._tag(tenant)
        keys = [f"{tag}:res:{res_id}", f"{tag}:scopes"]
        args: list[Any] = [self.window_ms, self.buckets, tokens, self.reservation_ttl_ms, _INDEX_TTL_MS, *lease]
        for s in scopes:
            keys.extend(self._scope_keys(tag, s.name))
            lim = s.limits
            args += [
                s.name,
                _opt(lim.rpm),
                _opt(lim.tpm),
                _opt(lim.daily_usd, _NANO),
                _opt(lim.monthly_usd, _NANO),
            ]
        try:
            return await self._call(self._reserve, keys, args)
        except STORE_ERRORS as e:
            self._failed(e)
            # The store may still run this reserve later (a frozen store, a timed-out call): make
            # sure it never counts, whatever the order in which the store sees the two calls.
            self._cancel_later(Reservation(tenant, res_id, tuple(s.name for s in scopes), tokens))
            raise

    def _decision(
        self, tenant: str, res_id: str, scopes: Sequence[Scope], tokens: int, out: list[Any]
    ) -> Decision:
        admitted = int(out[0]) == 1
        d = Decision(admitted)
        if admitted:
            d.reservation = Reservation(tenant, res_id, tuple(s.name for s in scopes), tokens)
        else:
            d.reason = _s(out[1])
            d.scope = scopes[int(out[2]) - 1].name
            retry_ms = int(out[3])
            d.retry_after_s = None if retry_ms < 0 else retry_ms / 1000
        best_r: int | None = None
        best_t: int | None = None
        for i, s in enumerate(scopes):
            rem_r, rem_t, reset_ms = int(out[5 + 3 * i]), int(out[6 + 3 * i]), int(out[7 + 3 * i])
            if s.limits.rpm is not None and (best_r is None or rem_r < best_r):
                best_r = rem_r
                d.limit_requests, d.remaining_requests, d.reset_requests_s = (
                    s.limits.rpm,
                    rem_r,
                    reset_ms / 1000,
                )
            if s.limits.tpm is not None and (best_t is None or rem_t < best_t):
                best_t = rem_t
                d.limit_tokens, d.remaining_tokens, d.reset_tokens_s = s.limits.tpm, rem_t, reset_ms / 1000
        return d

    async def settle(
        self,
        target: Decision | Reservation,
        actual_tokens: int,
        cost_usd: float,
        *,
        release_request: bool = False,
    ) -> str:
        """Replace the reservation with real usage: refund unused tokens, charge overshoot, charge spend.

        ``release_request=True`` also gives the request back (e.g. the provider was never reached).
        Returns ``settled``, ``expired`` (reservation older than its TTL: spend only), ``duplicate``
        (already settled), ``unreserved`` (admitted while the store was down: everything charged
        now), ``skipped`` (nothing to settle) or ``error`` (store failure; never raises).
        """
        res = target.reservation if isinstance(target, Decision) else target
        if res is None or not res.scopes:
            return "skipped"
        if res.settled:
            return "duplicate"
        res.settled = True
        if res.bucket is not None:  # admitted from a lease (lease.py batches these; this is the plain way)
            return await self.adjust(res.tenant, res.scopes, res.bucket, 1 if release_request else 0,
                                     max(int(actual_tokens), 0) - res.tokens, cost_usd)  # fmt: skip
        args = [
            self.window_ms, self.buckets, max(int(actual_tokens), 0), max(round(cost_usd * _NANO), 0),
            "u" if res.degraded else "r", 1 if release_request else 0, _SPEND_TTL_MS,
        ]  # fmt: skip
        # Retried only when idempotent: a reservation's record says `settled` once it ran.
        return await self._settle_call(self._settle_keys(res.tenant, f"res:{res.request_id}", res.scopes), args,
                                       retry=not res.degraded)  # fmt: skip

    async def end_lease(self, lease: Reservation, unused_requests: int, unused_tokens: int) -> str:
        """Settle a lease's record (sidegate/features/quota/lease.py): give back the requests and tokens it
        did not admit. Idempotent like a settle, and retried in the background on store errors."""
        args = [self.window_ms, self.buckets, max(lease.tokens - max(unused_tokens, 0), 0), 0, "r",
                max(int(unused_requests), 0), _SPEND_TTL_MS]  # fmt: skip
        return await self._settle_call(self._settle_keys(lease.tenant, f"res:{lease.request_id}", lease.scopes), args)

    async def adjust(self, tenant: str, scopes: Sequence[str], bucket: int, requests: int, tokens: int,
                     cost_usd: float, batch_id: str | None = None) -> str:  # fmt: skip
        """Add signed deltas to bucket ``bucket`` of every scope (``requests`` given back, ``tokens``
        added) and charge ``cost_usd``: the true-ups of requests admitted from leases
        (sidegate/features/quota/lease.py). The batch id (a new one by default; given, a repeated call shows
        the script counting it once) makes a repeat count once, so on store errors the call is
        retried in the background under it (``error``). Returns ``adjusted``
        or ``duplicate``."""
        args = [self.window_ms, self.buckets, int(tokens), max(round(cost_usd * _NANO), 0), "a", max(int(requests), 0),
                _SPEND_TTL_MS, int(bucket)]  # fmt: skip
        return await self._settle_call(self._settle_keys(tenant, f"adj:{batch_id or _ADJUST_IDS()}", scopes), args)

    def _settle_keys(self, tenant: str, first: str, scopes: Sequence[str]) -> list[str]:
        """KEYS of quota_settle.lua: the record (or batch id) `first`, then each scope's two keys."""
        tag = self._tag(tenant)
        keys = [f"{tag}:{first}"]
        for name in scopes:
            keys.extend(self._scope_keys(tag, name))
        return keys

    async def _settle_call(self, keys: list[str], args: list[Any], *, retry: bool = True) -> str:
        """Run quota_settle.lua; on store errors `error` (never raises), retried in the background
        when `retry`."""
        try:
            out = await self._call(self._settle, keys, args)
        except STORE_ERRORS as e:
            self._failed(e)
            self.counters.settle_errors += 1
            if retry:
                self._retry_later(keys, args)
            return "error"
        return _s(out[0])

    def _cancel_later(self, res: Reservation) -> None:
        keys = self._settle_keys(res.tenant, f"res:{res.request_id}", res.scopes)
        self._retry_later(keys, [self.window_ms, self.buckets, 0, 0, "c", 1, _SPEND_TTL_MS], first_delay_s=0.0)

    def _retry_later(self, keys: list[str], args: list[Any], attempts: int = 40, first_delay_s: float = 0.5) -> None:
        """Run a settle/cancel script in the background until the store takes it (bounded)."""

        async def run() -> None:
            await asyncio.sleep(first_delay_s)
            for i in range(attempts):  # ~2 min of retries with back-off
                try:
                    await self._call(self._settle, keys, args)
                    return
                except STORE_ERRORS:
                    await asyncio.sleep(min(0.5 * (i + 1), 5.0))

        if len(self._pending) >= 10_000:
            return  # a long outage: reservations still expire with their window
        task = asyncio.get_running_loop().create_task(run())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def usage(self, tenant: str) -> dict[str, Any]:
        """Usage of every scope this tenant used in the last two months; raises on store errors.

        ``{"tenant", "window_s", "scopes": {name: {requests, tokens, spent_day_usd, spent_month_usd,
        reset_s}}}``: requests and tokens in the current sliding window, spend in the current UTC
        day and month, seconds until the window is empty.
        """
        tag = self._tag(tenant)
        members = sorted(_s(m) for m in await self.store.command("SMEMBERS", f"{tag}:scopes",
                                                                 timeout_s=self.op_timeout_s * 2))  # fmt: skip
        scopes: dict[str, dict[str, float | int]] = {}
        if not members:
            return {"tenant": tenant, "window_s": self.window_ms / 1000, "scopes": scopes}
        keys: list[str] = []
        for name in members:
            keys.extend(self._scope_keys(tag, name))
        out = await self._call(self._usage, keys, [self.window_ms, self.buckets])
        for i, name in enumerate(members):
            r, t, sd, sm, reset = (int(v) for v in out[2 + 5 * i : 7 + 5 * i])
            scopes[name] = {
                "requests": r,
                "tokens": t,
                "spent_day_usd": sd / _NANO,
                "spent_month_usd": sm / _NANO,
                "reset_s": reset / 1000,
            }
        return {"tenant": tenant, "window_s": self.window_ms / 1000, "scopes": scopes}
