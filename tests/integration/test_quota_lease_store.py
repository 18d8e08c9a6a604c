"""Local admission from leases (sidegate/features/quota/lease.py) against a real Valkey: the global limits
hold across processes, usage comes out exact once leases end, quiet or nearly full scope sets
reserve request by request."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator

import pytest
from quota_helpers import Server, make_store, running_server

from sidegate.config.quota import LeasePolicy
from sidegate.features.quota import Limits, QuotaStore, Scope
from sidegate.features.quota.lease import LeasedQuota

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
        records = await store.store.redis.keys(f"{{sg:{tenant}}}:res:lease:*")  # each lease's own record
        assert records and {await store.store.redis.get(k) for k in records} == {b"settled"}
        await store.store.aclose()

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
        await a.store.aclose()
        await b.store.aclose()

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
        await store.store.aclose()

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
        await store.store.aclose()
        await other.store.aclose()

    asyncio.run(body())


def test_adjust_batches_count_once_and_cancel_undoes_a_whole_lease(server: Server, tenant: str) -> None:
    scopes = [Scope(f"tenant:{tenant}", Limits(rpm=1000))]

    async def body() -> None:
        store = make_store(server.url)
        d = await store.take_lease(tenant, scopes, 8, 10, 1.0, 1, 1)
        r = d.reservation
        assert d.admitted and r is not None and r.bucket is not None and d.remaining_requests == 992
        assert (r.requests, r.tokens) == (8, 10) and 0 <= r.bucket_left_s <= 1.0
        names = (f"tenant:{tenant}",)
        assert await store.adjust(tenant, names, r.bucket, 3, -4, 0.0, "b1") == "adjusted"
        assert await store.adjust(tenant, names, r.bucket, 3, -4, 0.0, "b1") == "duplicate"
        u = (await store.usage(tenant))["scopes"][f"tenant:{tenant}"]
        assert u["requests"] == 5 and u["tokens"] == 6, u
        # A lease whose reserve the client gave up on is undone whole by the cancel.
        d2 = await store.take_lease(tenant, scopes, 7, 20, 1.0, 1, 1)
        assert d2.reservation is not None
        store._cancel_later(d2.reservation)
        await asyncio.sleep(0.1)
        u = (await store.usage(tenant))["scopes"][f"tenant:{tenant}"]
        assert u["requests"] == 5 and u["tokens"] == 6, u
        await store.store.aclose()

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
        await store.store.aclose()

    asyncio.run(body())


def test_while_the_store_fails_requests_take_the_stores_way() -> None:
    """A lease would keep admitting through an outage; once a store call fails, every request goes
    to the store instead, so `store.fail_mode` decides for it as without leases."""
    with running_server("valkey") as srv:

        async def body() -> None:
            store = make_store(srv.url)
            q = LeasedQuota(store, LeasePolicy(enabled=True, ttl_ms=1000, flush_ms=10))
            scopes = [Scope("tenant:down", Limits(rpm=100_000))]
            loop = asyncio.get_running_loop()
            # A lease that outlives stopping the server (a lease ends with its bucket, so wait for one
            # with time left; the store is killed, which takes milliseconds).
            deadline = loop.time() + 5
            i = 0
            while not any(lease.expires - loop.time() > 0.5 and lease.requests > 20 for lease in q._leases.values()):
                assert loop.time() < deadline, "no lease with time left"
                await q.reserve("down", scopes, 0, f"r{i}")
                i += 1
                await asyncio.sleep(0.001)
            srv.stop()
            d = await q.reserve("down", scopes, 0, "first")  # still from the lease: nothing failed yet
            assert d.admitted and d.reservation is not None and d.reservation.bucket is not None
            await store.settle(d, 5, 0.0)  # a store call that fails
            assert store.down
            after = await q.reserve("down", scopes, 0, "after")
            assert after.degraded and after.reservation is not None and after.reservation.bucket is None
            await q.close(timeout_s=0.1)

        asyncio.run(body())


def test_a_lease_takes_a_share_of_what_is_left_now(server: Server, tenant: str) -> None:
    """The store sizes every lease from what the scopes have left when it is granted: after another
    gateway used most of the limit, the next lease is small (or none), not the size of the last."""
    scopes = [Scope(f"tenant:{tenant}", Limits(rpm=8000))]

    async def body() -> None:
        store, other = make_store(server.url), make_store(server.url)
        q = LeasedQuota(store, LeasePolicy(ttl_ms=1000, flush_ms=10))  # leases as large as the rate asks
        i = 0
        while not q._leases or next(iter(q._leases.values())).granted < 100:
            await q.reserve(tenant, scopes, 0, f"r{i}")
            i += 1
            await asyncio.sleep(0)
        first = next(iter(q._leases.values()))
        left = (await other.reserve(tenant, scopes, 0, "probe")).remaining_requests
        assert left is not None and left > 1000
        big = await other.take_lease(tenant, scopes, left - 400, 1, 1.0, 1, 1)  # all but 400
        assert big.admitted
        while first.requests * 4 >= first.granted:
            await q.reserve(tenant, scopes, 0, f"r{i}")
            i += 1
        await q.reserve(tenant, scopes, 0, f"r{i}")  # asks for the next lease
        await asyncio.sleep(0.05)
        renewed = [lease for lease in q._leases.values() if lease is not first]
        assert renewed and all(lease.granted <= 400 // 16 for lease in renewed), [lease.granted for lease in renewed]
        await q.close()
        for s in (store, other):
            await s.store.aclose()

    asyncio.run(body())


def test_a_lease_ends_with_its_bucket() -> None:
    """What a lease admits counts in its bucket: it must not admit past that bucket's end, or those
    requests would stop counting less than a window after they were admitted (window 2 s of two
    buckets here: no real 2 s interval may see more admissions than the limit)."""
    rpm = 200
    with running_server("valkey") as srv:

        async def body() -> None:
            store, other = make_store(srv.url, window_s=2, buckets=2), make_store(srv.url, window_s=2, buckets=2)
            q = LeasedQuota(store, LeasePolicy(share=0.5, min_requests=2, max_requests=64, ttl_ms=1000, flush_ms=10))
            scopes = [Scope("tenant:t", Limits(rpm=rpm))]
            s_, us = await store.store.redis.time()
            offset = s_ * 1000 + us // 1000 - time.time() * 1000

            def now_ms() -> float:
                return time.time() * 1000 + offset

            deadline = time.monotonic() + 5
            while not 880 <= now_ms() % 1000 < 900 and time.monotonic() < deadline:
                await asyncio.sleep(0.001)
            b0 = int(now_ms() // 1000)
            admits: list[float] = []
            i = 0
            while now_ms() < (b0 + 1) * 1000 + 800 and i < 5000:  # late in b0, then well into b0 + 1
                d = await q.reserve("t", scopes, 0, f"a{i}")
                i += 1
                if d.admitted:
                    admits.append(now_ms())
                    assert d.reservation is not None
                    if d.reservation.bucket is not None:  # from a lease: only within its bucket
                        assert admits[-1] < (d.reservation.bucket + 1) * 1000 + 5, (admits[-1], d.reservation.bucket)
                await asyncio.sleep(0.002)
            assert q.local_admits > 0  # the leases' way was taken (the check above ran)
            await asyncio.sleep(max((b0 + 3) * 1000 + 10 - now_ms(), 0) / 1000)
            while (await other.reserve("t", scopes, 0, f"o{i}")).admitted and i < 10_000:
                i += 1
                admits.append(now_ms())
            admits.sort()
            busiest = max(sum(1 for t in admits if s <= t < s + 2000) for s in admits)
            assert busiest <= rpm, busiest
            await q.close()
            for s in (store, other):
                await s.store.aclose()

        asyncio.run(body())


def test_a_lease_granted_while_closing_is_given_back(server: Server, tenant: str) -> None:
    scopes = [Scope(f"tenant:{tenant}", Limits(rpm=100_000))]

    async def body() -> None:
        store = make_store(server.url)
        q = LeasedQuota(store, LeasePolicy(ttl_ms=1000, flush_ms=10))
        n = 0
        while not q._taking and n < 50:  # until a lease is being asked for
            await q.reserve(tenant, scopes, 0, f"r{n}")
            n += 1
        assert q._taking and not q._leases
        await q.close()  # the lease arrives while closing
        assert not q._leases and q.leases_taken == 1
        u = (await store.usage(tenant))["scopes"][f"tenant:{tenant}"]
        assert u["requests"] == n, (u, n)  # only the requests, nothing held for a lease
        await store.store.aclose()

    asyncio.run(body())


def test_a_scope_set_near_its_limit_does_not_ask_for_a_lease_per_request(server: Server, tenant: str) -> None:
    """Once the store refused a lease (too little left), the next ask waits a lease period: the
    requests of a busy scope set near its limit cost one store call each, as without leases."""
    scopes = [Scope(f"tenant:{tenant}", Limits(rpm=100))]  # 1/16 of it is below min_requests

    async def body() -> None:
        store = make_store(server.url)
        q = LeasedQuota(store, LeasePolicy(ttl_ms=1000, flush_ms=10))
        calls = 0
        real = store.take_lease

        async def counted(*a, **kw):  # type: ignore[no-untyped-def]
            nonlocal calls
            calls += 1
            return await real(*a, **kw)

        store.take_lease = counted  # type: ignore[method-assign]
        for i in range(60):
            assert (await q.reserve(tenant, scopes, 0, f"r{i}")).admitted
            await asyncio.sleep(0)
        assert q.leases_taken == 0 and calls == 1, calls
        await q.close()
        await store.store.aclose()

    asyncio.run(body())
