"""QuotaStore against real servers: embedded Valkey and Debian's redis-server."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator

import pytest
from quota_helpers import SERVER_KINDS, Server, make_store, running_server

from sidegate.errors import GatewayError
from sidegate.features.quota import Decision, Limits, Reservation, Scope, rejection_error

_tenants = itertools.count()


@pytest.fixture(scope="module", params=SERVER_KINDS)
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    with running_server(request.param) as srv:
        yield srv


@pytest.fixture
def tenant() -> str:
    return f"t{next(_tenants)}"


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


async def _reserve_n(store, tenant, scopes, tokens, n):  # type: ignore[no-untyped-def]
    return [await store.reserve(tenant, scopes, tokens, f"r{i}") for i in range(n)]


def test_rpm_admits_exactly_the_limit(server: Server, tenant: str) -> None:
    async def body() -> list[Decision]:
        store = make_store(server.url)
        out = await _reserve_n(store, tenant, [Scope(f"tenant:{tenant}", Limits(rpm=5))], 0, 7)
        await store.store.aclose()
        return out

    ds = run(body())
    assert [d.admitted for d in ds] == [True] * 5 + [False] * 2
    assert [d.remaining_requests for d in ds[:5]] == [4, 3, 2, 1, 0]
    rej = ds[5]
    assert rej.reason == "rpm" and rej.scope == f"tenant:{tenant}" and rej.reservation is None
    assert rej.retry_after_s is not None and 0 < rej.retry_after_s <= 61
    assert rej.headers()["retry-after"] == str(int(-(-rej.retry_after_s // 1)))
    err = rejection_error(rej)
    assert err.status == 429 and err.code == "rate_limit_exceeded" and "retry-after" in err.headers


def test_tpm_admits_exactly_the_limit(server: Server, tenant: str) -> None:
    scopes = [Scope(f"tenant:{tenant}", Limits(tpm=1000))]

    async def body() -> list[Decision]:
        store = make_store(server.url)
        out = await _reserve_n(store, tenant, scopes, 300, 4)
        out.append(await store.reserve(tenant, scopes, 100, "fits"))
        out.append(await store.reserve(tenant, scopes, 1, "full"))
        out.append(await store.reserve(tenant, scopes, 1001, "huge"))
        await store.store.aclose()
        return out

    ds = run(body())
    assert [d.admitted for d in ds] == [True, True, True, False, True, False, False]
    assert ds[3].reason == "tpm" and ds[3].remaining_tokens == 100
    assert ds[4].remaining_tokens == 0 and ds[4].limit_tokens == 1000
    assert ds[6].reason == "too_large" and ds[6].retry_after_s is None
    assert "retry-after" not in ds[6].headers()


def test_all_or_nothing_across_scopes(server: Server, tenant: str) -> None:
    roomy = Scope(f"tenant:{tenant}", Limits(rpm=100, tpm=10_000))
    tight = Scope(f"key:{tenant}-k", Limits(tpm=250))
    model = Scope(f"model:{tenant}:gpt-4o", Limits(rpm=100))

    async def body() -> tuple[list[Decision], dict]:
        store = make_store(server.url)
        ds = [await store.reserve(tenant, [roomy, tight, model], 200, f"r{i}") for i in range(3)]
        usage = await store.usage(tenant)
        await store.store.aclose()
        return ds, usage

    ds, usage = run(body())
    assert [d.admitted for d in ds] == [True, False, False]
    assert ds[1].scope == tight.name and ds[1].reason == "tpm"
    for name in (roomy.name, tight.name, model.name):
        assert usage["scopes"][name]["requests"] == 1
        assert usage["scopes"][name]["tokens"] == 200
    # Headers describe the most constrained scope of each kind.
    assert ds[0].limit_tokens == 250 and ds[0].remaining_tokens == 50
    assert ds[0].limit_requests == 100 and ds[0].remaining_requests == 99


def test_settle_refunds_unused_and_charges_overshoot(server: Server, tenant: str) -> None:
    scopes = [Scope(f"tenant:{tenant}", Limits(tpm=1000))]

    async def body() -> list[object]:
        store = make_store(server.url)
        a = await store.reserve(tenant, scopes, 800, "a")
        refund = await store.settle(a, 300, 0.0)  # 500 back
        b = await store.reserve(tenant, scopes, 700, "b")  # 300 + 700 = 1000
        c = await store.reserve(tenant, scopes, 1, "c")
        over = await store.settle(b, 650, 0.0)  # 50 back -> 950
        d = await store.reserve(tenant, scopes, 50, "d")
        e = await store.reserve(tenant, scopes, 1, "e")
        await store.settle(d, 150, 0.0)  # overshoot: 950 + 150 = 1100 > limit
        usage = await store.usage(tenant)
        again = await store.settle(a, 1, 0.0)
        copy = Reservation(a.reservation.tenant, a.reservation.request_id, a.reservation.scopes, 800)
        dup = await store.settle(copy, 1, 0.0)
        await store.store.aclose()
        return [refund, b.admitted, c.admitted, over, d.admitted, e.admitted, usage, again, dup]

    refund, b, c, over, d, e, usage, again, dup = run(body())
    assert refund == "settled" and over == "settled"
    assert (b, c, d, e) == (True, False, True, False)
    assert usage["scopes"][f"tenant:{tenant}"]["tokens"] == 1100
    assert usage["scopes"][f"tenant:{tenant}"]["requests"] == 3
    assert again == "duplicate" and dup == "duplicate"


def test_release_request_gives_the_request_back(server: Server, tenant: str) -> None:
    scopes = [Scope(f"tenant:{tenant}", Limits(rpm=1, tpm=100))]

    async def body() -> tuple[bool, bool]:
        store = make_store(server.url)
        a = await store.reserve(tenant, scopes, 100, "a")
        await store.settle(a, 0, 0.0, release_request=True)
        b = await store.reserve(tenant, scopes, 100, "b")
        await store.store.aclose()
        return a.admitted, b.admitted

    assert run(body()) == (True, True)


def test_unsettled_reservations_age_out(server: Server, tenant: str) -> None:
    scopes = [Scope(f"tenant:{tenant}", Limits(rpm=2, tpm=100))]

    async def body() -> list[object]:
        store = make_store(server.url, window_s=0.5, buckets=5, reservation_ttl_s=0.5)
        a = await store.reserve(tenant, scopes, 100, "a")  # never settled (crashed gateway)
        b = await store.reserve(tenant, scopes, 1, "b")
        await asyncio.sleep(b.retry_after_s or 0)
        c = await store.reserve(tenant, scopes, 100, "c")
        await asyncio.sleep(0.15)  # the record's TTL is max(reservation_ttl, W + g) = 0.6 s
        late = await store.settle(a, 10, 0.002)  # record gone: spend only, no token refund
        usage = await store.usage(tenant)
        await store.store.aclose()
        return [a.admitted, b.admitted, b.retry_after_s, c.admitted, late, usage]

    a, b, retry, c, late, usage = run(body())
    assert a and not b and c
    assert 0 < retry <= 0.6 + 0.01
    assert late == "expired"
    s = usage["scopes"][f"tenant:{tenant}"]
    assert s["tokens"] == 100 and s["requests"] == 1
    assert s["spent_day_usd"] == pytest.approx(0.002)


def test_settle_after_window_charges_only_overshoot(server: Server, tenant: str) -> None:
    scopes = [Scope(f"tenant:{tenant}", Limits(tpm=1000))]

    async def body() -> dict:
        store = make_store(server.url, window_s=0.3, buckets=3, reservation_ttl_s=5)
        a = await store.reserve(tenant, scopes, 100, "a")
        await asyncio.sleep(0.45)
        assert await store.settle(a, 400, 0.0) == "settled"
        usage = await store.usage(tenant)
        await store.store.aclose()
        return usage["scopes"][f"tenant:{tenant}"]

    s = run(body())
    assert s["tokens"] == 300 and s["requests"] == 0


def test_budgets_check_before_and_charge_after(server: Server, tenant: str) -> None:
    daily = [Scope(f"tenant:{tenant}", Limits(daily_usd=0.01))]
    monthly = [Scope(f"model:{tenant}:m", Limits(monthly_usd=0.005))]

    async def body() -> list[object]:
        store = make_store(server.url)
        out: list[object] = []
        for i in range(3):
            d = await store.reserve(tenant, daily, 10, f"d{i}")
            out.append(d.admitted)
            await store.settle(d, 10, 0.004)  # 0.004, 0.008, 0.012 (last one overshoots)
        out.append(await store.reserve(tenant, daily, 10, "d-after"))
        m = await store.reserve(tenant, monthly, 10, "m0")
        await store.settle(m, 10, 0.005)
        out.append(await store.reserve(tenant, monthly, 10, "m1"))
        out.append(await store.usage(tenant))
        await store.store.aclose()
        return out

    a0, a1, a2, rej_day, rej_month, usage = run(body())
    assert (a0, a1, a2) == (True, True, True)
    assert not rej_day.admitted and rej_day.reason == "daily_usd"
    to_midnight = 86_400 - time.time() % 86_400  # store and test share the machine's clock
    assert abs(rej_day.retry_after_s - to_midnight) < 5
    assert rejection_error(rej_day).code == "insufficient_quota"
    assert not rej_month.admitted and rej_month.reason == "monthly_usd"
    assert 0 < rej_month.retry_after_s <= 31 * 86_400
    assert usage["scopes"][f"tenant:{tenant}"]["spent_day_usd"] == pytest.approx(0.012)
    assert usage["scopes"][f"tenant:{tenant}"]["spent_month_usd"] == pytest.approx(0.012)
    assert usage["scopes"][f"model:{tenant}:m"]["spent_month_usd"] == pytest.approx(0.005)


def test_noscript_reload_after_script_flush(server: Server, tenant: str) -> None:
    scopes = [Scope(f"tenant:{tenant}", Limits(rpm=10))]

    async def body() -> tuple[bool, int, int]:
        store = make_store(server.url)
        assert await store.load_scripts()
        await store.reserve(tenant, scopes, 1, "a")
        before = store.script_reloads
        await store.store.redis.script_flush()
        d = await store.reserve(tenant, scopes, 1, "b")
        await store.settle(d, 1, 0.0)
        await store.store.aclose()
        return d.admitted and not d.degraded, before, store.script_reloads

    ok, before, after = run(body())
    assert ok and before == 0 and after == 2  # reserve and settle each reloaded once


def test_keys_share_one_hash_tag(server: Server, tenant: str) -> None:
    scopes = [Scope(f"tenant:{tenant}", Limits(rpm=10)), Scope(f"key:{tenant}k", Limits(tpm=10))]

    async def body() -> list[bytes]:
        store = make_store(server.url)
        d = await store.reserve(tenant, scopes, 1, "a")
        await store.settle(d, 1, 0.01)
        keys = [k async for k in store.store.redis.scan_iter(match=f"{{sg:{tenant}}}*")]
        await store.store.aclose()
        return keys

    keys = run(body())
    assert len(keys) == 6  # record, scope index, window + spend per scope
    assert all(k.startswith(f"{{sg:{tenant}}}:".encode()) for k in keys)


# -- store failures: each test owns its server -------------------------------------------------


@pytest.mark.alone  # bounds a duration
@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_store_down_fail_open_and_closed(kind: str) -> None:
    with running_server(kind) as srv:
        url = srv.url
        srv.stop()
        scopes = [Scope("tenant:x", Limits(rpm=1))]

        async def body() -> tuple[Decision, float, BaseException | None]:
            open_store = make_store(url, fail_mode="open")
            closed = make_store(url, fail_mode="closed")
            t0 = time.monotonic()
            d = await open_store.reserve("x", scopes, 10, "a")
            await open_store.reserve("x", scopes, 10, "b")
            elapsed = time.monotonic() - t0
            err: BaseException | None = None
            try:
                await closed.reserve("x", scopes, 10, "c")
            except GatewayError as e:
                err = e
            assert await open_store.settle(d, 10, 0.0) == "error"
            assert open_store.counters.fail_open_admits == 2 and open_store.counters.store_errors == 3
            await open_store.store.aclose()
            await closed.store.aclose()
            return d, elapsed, err

        d, elapsed, err = run(body())
        assert d.admitted and d.degraded and d.headers() == {}
        assert elapsed < 2.0
        assert isinstance(err, GatewayError) and err.status == 503


@pytest.mark.alone  # bounds a duration
@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_hung_store_is_bounded_by_op_timeout(kind: str) -> None:
    with running_server(kind) as srv:

        async def body() -> tuple[bool, float, bool]:
            store = make_store(srv.url, op_timeout_s=0.3)
            await store.reserve("h", [Scope("tenant:h", Limits(rpm=5))], 1, "warm")
            srv.freeze()
            try:
                t0 = time.monotonic()
                d = await store.reserve("h", [Scope("tenant:h", Limits(rpm=5))], 1, "a")
                elapsed = time.monotonic() - t0
            finally:
                srv.thaw()
            again = await store.reserve("h", [Scope("tenant:h", Limits(rpm=5))], 1, "b")
            await store.store.aclose()
            return d.degraded, elapsed, again.degraded

        degraded, elapsed, after = run(body())
        assert degraded and elapsed < 1.0 and not after


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_store_restart_recovers_without_new_store(kind: str) -> None:
    with running_server(kind) as srv:
        scopes = [Scope("tenant:r", Limits(rpm=100, tpm=1000))]

        async def body() -> list[object]:
            store = make_store(srv.url, fail_mode="open")
            first = await store.reserve("r", scopes, 100, "a")
            srv.stop()
            during = await store.reserve("r", scopes, 100, "b")
            srv.restart()  # empty server: no data, no scripts
            after = await store.reserve("r", scopes, 100, "c")
            # The request admitted while the store was down is charged when it settles.
            unreserved = await store.settle(during, 40, 0.001)
            usage = await store.usage("r")
            await store.store.aclose()
            return [first.degraded, during.degraded, after.admitted and not after.degraded, unreserved, usage]

        first, during, after_ok, unreserved, usage = run(body())
        assert not first and during and after_ok
        assert unreserved == "unreserved"
        s = usage["scopes"]["tenant:r"]
        assert s["requests"] == 2 and s["tokens"] == 140
        assert s["spent_day_usd"] == pytest.approx(0.001)


def test_lua_calendar_matches_python(server: Server) -> None:
    """The UTC day/month arithmetic inside the scripts (budget periods and their resets)."""
    import datetime as dt

    from sidegate.features.quota.scripts import lua_dir

    lib = (lua_dir() / "quota_lib.lua").read_text()
    probe = lib + "\nlocal y, m, d, dim = civil(tonumber(ARGV[1]))\nreturn {y, m, d, dim}"
    days = [0, 59, 365, 10_956, 11_016, 11_017, 19_782, 19_783, 20_088, 47_541, 47_540, 20_453]

    async def body() -> list[list[int]]:
        store = make_store(server.url)
        out = [await store.store.redis.eval(probe, 0, day) for day in days]
        await store.store.aclose()
        return out

    epoch = dt.date(1970, 1, 1)
    for day, (y, m, d, dim) in zip(days, run(body()), strict=True):
        date = epoch + dt.timedelta(days=day)
        nxt = (date.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        assert (y, m, d, dim) == (date.year, date.month, date.day, (nxt - date.replace(day=1)).days), date
