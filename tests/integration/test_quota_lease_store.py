"""Local admission from leases (sidegate/quota/lease.py) against a real Valkey: the global limits
hold across processes, usage comes out exact once leases end, quiet or nearly full scope sets
reserve request by request."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator

import pytest
from quota_helpers import Server, make_store, running_server

from sidegate.quota import Limits, QuotaStore, Scope
from sidegate.quota.lease import LeasedQuota
from sidegate.quota.policy import LeasePolicy

_tenants = itertools.count()
FAST = LeasePolicy(enabled=True, ttl_ms=150, flush_ms=10)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with running_server("valkey") as srv:
        yield srv


@pytest.fixture
def tenant() -> str:
    return f"lease{next(_tenants)}"


async def _settle_all(q: LeasedQuota, decisions: list, actual: int) -> None:  # type: ignore[type-arg]
    for d in decisions:
        if d.admitted:
            await q.settle(d, actual, 0.0)


def test_leases_admit_locally_and_usage_is_exact_after_they_end(server: Server, tenant: str) -> None:
    scopes = [Scope(f"tenant:{tenant}", Limits(rpm=100_000, tpm=10**9))]

    async def body() -> None:
        store = make_store(server.url)
        q = LeasedQuota(store, FAST)
        ds = []
        for i in range(400):
            ds.append(await q.reserve(tenant, scopes, 100, f"r{i}"))
            if i % 50 == 0:
                await asyncio.sleep(0.001)  # let a lease being taken arrive
        assert all(d.admitted for d in ds)
        assert q.leases_taken >= 1 and q.local_admits > 300, (q.leases_taken, q.local_admits)
        local = [d for d in ds if d.reservation is not None and d.reservation.bucket is not None]
        assert local and all(d.headers().get("x-ratelimit-limit-requests") == "100000" for d in local)
        await _settle_all(q, ds, 30)  # each used 30 of its 100 estimated tokens
        await q.close()
        u = (await store.usage(tenant))["scopes"][f"tenant:{tenant}"]
        assert u["requests"] == 400 and u["tokens"] == 400 * 30, u
        records = await store.redis.keys(f"{{sg:{tenant}}}:res:lease:*")  # each lease's own record
        assert records and {await store.redis.get(k) for k in records} == {b"settled"}
        await store.redis.aclose()

    asyncio.run(body())


def test_the_global_limit_holds_across_processes(server: Server, tenant: str) -> None:
    """Two gateways (two clients, two lease holders) never admit more than the limit together,
    and once their leases end the store counts exactly what they admitted."""
    scopes = [Scope(f"tenant:{tenant}", Limits(rpm=600))]

    async def body() -> None:
        a, b = make_store(server.url), make_store(server.url)
        qa, qb = LeasedQuota(a, FAST), LeasedQuota(b, FAST)
        admitted = 0
        for i in range(900):
            q = qa if i % 2 else qb
            d = await q.reserve(tenant, scopes, 0, f"r{i}")
            admitted += d.admitted
            if i % 20 == 0:
                await asyncio.sleep(0.001)
        assert qa.local_admits + qb.local_admits > 0
        assert admitted <= 600
        await qa.close()
        await qb.close()
        u = (await a.usage(tenant))["scopes"][f"tenant:{tenant}"]
        assert u["requests"] == admitted, (u, admitted)
        # Capacity a lease held is back: the rest of the limit can be reserved now.
        more = 0
        for i in range(700):
            more += (await a.reserve(tenant, scopes, 0, f"x{i}")).admitted
        assert admitted + more == 600
        await a.redis.aclose()
        await b.redis.aclose()

    asyncio.run(body())


def test_small_limits_and_quiet_scopes_reserve_one_by_one(server: Server, tenant: str) -> None:
    async def body() -> None:
        store = make_store(server.url)
        q = LeasedQuota(store, FAST)
        tight = [Scope(f"tenant:{tenant}", Limits(rpm=5))]
        ds = [await q.reserve(tenant, tight, 0, f"r{i}") for i in range(7)]
        await asyncio.sleep(0.05)
        assert [d.admitted for d in ds] == [True] * 5 + [False] * 2
        assert [d.remaining_requests for d in ds[:5]] == [4, 3, 2, 1, 0]
        quiet = [Scope(f"tenant:{tenant}-q", Limits(rpm=100_000))]
        for i in range(3):  # fewer than min_requests / 2 per lease period
            await q.reserve(f"{tenant}-q", quiet, 0, f"q{i}")
            await asyncio.sleep(0.2)
        assert q.leases_taken == 0 and q.local_admits == 0
        await q.close()
        await store.redis.aclose()

    asyncio.run(body())


def test_a_lease_admitted_request_settles_in_any_process(server: Server, tenant: str) -> None:
    """The access log of a direct-lane request may reach another worker: a plain store settles
    the reservation into the lease's bucket (a one-off adjust), once."""
    scopes = [Scope(f"tenant:{tenant}", Limits(tpm=10**9))]

    async def body() -> None:
        store = make_store(server.url)
        q = LeasedQuota(store, FAST)
        for i in range(40):
            d = await q.reserve(tenant, scopes, 50, f"r{i}")
            await asyncio.sleep(0)
        assert d.reservation is not None and d.reservation.bucket is not None
        other: QuotaStore = make_store(server.url)
        res = d.reservation
        assert await other.settle(res, 500, 0.0) == "adjusted"
        assert await other.settle(res, 500, 0.0) == "duplicate"
        await q.close()
        u = (await store.usage(tenant))["scopes"][f"tenant:{tenant}"]
        # 39 unsettled requests keep their estimate (50), the settled one counts its 500.
        assert u["requests"] == 40 and u["tokens"] == 39 * 50 + 500, u
        await store.redis.aclose()
        await other.redis.aclose()

    asyncio.run(body())


def test_adjust_batches_count_once_and_cancel_undoes_a_whole_lease(server: Server, tenant: str) -> None:
    scopes = [Scope(f"tenant:{tenant}", Limits(rpm=1000))]

    async def body() -> None:
        store = make_store(server.url)
        d = await store.reserve(tenant, scopes, 10, "lease", requests=8, strict=True)
        r = d.reservation
        assert d.admitted and r is not None and r.bucket is not None and d.remaining_requests == 992
        names = (f"tenant:{tenant}",)
        assert await store.adjust(tenant, names, r.bucket, 3, -4, 0.0, "b1") == "adjusted"
        assert await store.adjust(tenant, names, r.bucket, 3, -4, 0.0, "b1") == "duplicate"
        u = (await store.usage(tenant))["scopes"][f"tenant:{tenant}"]
        assert u["requests"] == 5 and u["tokens"] == 6, u
        # A lease whose reserve the client gave up on is undone whole by the cancel.
        d2 = await store.reserve(tenant, scopes, 20, "lease", requests=7, strict=True)
        assert d2.reservation is not None
        store._cancel_later(d2.reservation)
        await asyncio.sleep(0.1)
        u = (await store.usage(tenant))["scopes"][f"tenant:{tenant}"]
        assert u["requests"] == 5 and u["tokens"] == 6, u
        await store.redis.aclose()

    asyncio.run(body())


def test_changed_limits_never_use_an_old_lease(server: Server, tenant: str) -> None:
    async def body() -> None:
        store = make_store(server.url)
        q = LeasedQuota(store, FAST)
        big = [Scope(f"tenant:{tenant}", Limits(rpm=100_000))]
        for i in range(60):
            await q.reserve(tenant, big, 0, f"r{i}")
            await asyncio.sleep(0)
        assert q.local_admits > 0
        # The tenant's limit drops to what the store counts (its leases included): nothing more is
        # admitted, although this process still holds a lease taken under the old limit.
        assert q._leases
        used = (await store.usage(tenant))["scopes"][f"tenant:{tenant}"]["requests"]
        small = [Scope(f"tenant:{tenant}", Limits(rpm=used))]
        assert not (await q.reserve(tenant, small, 0, "after")).admitted
        await q.close()
        await store.redis.aclose()

    asyncio.run(body())


def test_while_the_store_fails_requests_take_the_stores_way() -> None:
    """A lease would keep admitting through an outage; once a store call fails, every request goes
    to the store instead, so `store.fail_mode` decides for it as without leases."""
    with running_server("valkey") as srv:

        async def body() -> None:
            store = make_store(srv.url)
            q = LeasedQuota(store, FAST)
            scopes = [Scope("tenant:down", Limits(rpm=100_000))]
            for i in range(60):
                await q.reserve("down", scopes, 0, f"r{i}")
                await asyncio.sleep(0)
            assert q._leases
            srv.stop()
            d = await q.reserve("down", scopes, 0, "first")  # still from the lease: nothing failed yet
            assert d.admitted and d.reservation is not None and d.reservation.bucket is not None
            await store.settle(d, 5, 0.0)  # a store call that fails
            assert store.down
            after = await q.reserve("down", scopes, 0, "after")
            assert after.degraded and after.reservation is not None and after.reservation.bucket is None
            await q.close(timeout_s=0.1)

        asyncio.run(body())
