"""The latency policy (features/route/latency.py, policy.py): exploration, the EWMAs and their error
penalty, staleness, several replicas' entries combined through the store, the background sync."""

from __future__ import annotations

import asyncio
import math

import pytest
from route_helpers import LAT, Clock, FakeRedis, choose, ctx_for, done, eject, make_cfg, policy

from sidegate.features.route import latency as lat
from sidegate.features.route.latency import LatencyBoard, combine


def test_latency_explores_the_unmeasured_then_takes_the_fastest():
    clock = Clock()
    p = policy(clock)
    cfg = make_cfg({"m": LAT})
    first, second = ctx_for("m"), ctx_for("m")
    assert choose(p, cfg, first) == "m@a" and first.meta["reason"] == "latency:explore"
    assert (
        choose(p, cfg, second) == "m@b" and second.meta["reason"] == "latency:explore"
    )  # nothing known: turns
    p.latency.observe(done("a", 0.30))
    p.latency.observe(done("b", 0.05))
    ctx = ctx_for("m")
    assert choose(p, cfg, ctx) == "m@b" and ctx.meta == {
        "pin": "b",
        "policy": "latency",
        "reason": "latency:fastest",
    }
    for _ in range(3):  # b slows down: the EWMA moves within a few tries
        p.latency.observe(done("b", 1.0))
    assert choose(p, cfg, ctx_for("m")) == "m@a"


def test_latency_penalises_errors_and_skips_ejections():
    p = policy()
    cfg = make_cfg({"m": LAT})
    p.latency.observe(done("a", 0.10))
    p.latency.observe(done("b", 0.15))
    assert choose(p, cfg, ctx_for("m")) == "m@a"
    p.latency.observe(done("a", 0.0, status=503))  # err 0.2: 100 * 1.8 = 180 > 150
    assert p.latency.score("m", "a") == pytest.approx(100 * (1 + 4 * 0.2))
    assert choose(p, cfg, ctx_for("m")) == "m@b"
    p.latency.observe(done("a", 0.0, status=400))  # the request's fault: not counted
    assert p.latency.score("m", "a") == pytest.approx(180)
    eject(p, "b", "m")
    ctx = ctx_for("m")
    assert choose(p, cfg, ctx) == "m@a" and ctx.meta["reason"] == "breaker:skip"


def test_only_failures_rank_last_and_other_policies_are_not_measured():
    board = LatencyBoard(clock=Clock())
    board.observe(done("a", 0.0, status=0))
    assert board.score("m", "a") == math.inf
    c = done("b", 0.1)
    c.meta["policy"] = "cost"
    board.observe(c)
    assert board.score("m", "b") is None


def test_an_unmeasured_provider_is_explored_once_per_interval_while_another_is_known():
    clock = Clock()
    p = policy(clock)
    cfg = make_cfg(
        {
            "m": {
                "routes": [{"provider": "a"}, {"provider": "b"}, {"provider": "c"}],
                "policy": {"kind": "latency"},
            }
        }
    )
    p.latency.observe(done("a", 0.1))
    picks = [choose(p, cfg, ctx_for("m")) for _ in range(4)]
    assert picks == ["m@b", "m@c", "m@a", "m@a"]
    clock.t += lat.EXPLORE_S
    assert choose(p, cfg, ctx_for("m")) == "m@b"


def test_stale_stats_count_as_unmeasured_and_start_over():
    wall = Clock(1_700_000_000.0)
    board = LatencyBoard(clock=wall)
    board.observe(done("a", 2.0))
    wall.t += lat.STALE_S + 1
    assert board.score("m", "a") is None
    board.observe(done("a", 0.1))
    assert board.score("m", "a") == pytest.approx(100)  # not mixed with the old 2 s


def test_replicas_entries_combine_weighted_by_samples():
    now = 1_700_000_000.0
    entries = [
        [100.0, 0.0, 30, 30, now - 1],
        [400.0, 0.5, 10, 5, now - 2],
        [9999.0, 1.0, 50, 50, now - lat.STALE_S - 1],
    ]
    o = combine(entries, now)  # the third is stale; the first's weight is capped at WEIGHT_CAP
    assert o.w == 30 and o.ok_w == 25
    assert o.ttft_w / o.ok_w == pytest.approx((20 * 100 + 5 * 400) / 25)
    assert o.err_w / o.w == pytest.approx(10 * 0.5 / 30)


def test_replicas_share_their_stats_through_the_store():
    wall = Clock(1_700_000_000.0)
    redis = FakeRedis()
    one, two = LatencyBoard(redis, wall), LatencyBoard(redis, wall)
    for _ in range(5):
        one.observe(done("a", 0.5))
    two.observe(done("a", 0.1))
    two.want("m")

    async def sync_all() -> None:
        await one.sync()
        await two.sync()
        await one.sync()

    asyncio.run(sync_all())
    assert set(redis.hashes["sg:lat:m"]) == {one.replica.encode(), two.replica.encode()}
    expected = (5 * 500 + 1 * 100) / 6
    assert one.score("m", "a") == pytest.approx(expected) and two.score("m", "a") == pytest.approx(expected)
    # a replica gone quiet: its entry ages out of the view, then out of the store
    wall.t += lat.STALE_S + 1
    asyncio.run(two.sync())
    assert two.score("m", "a") is None
    wall.t += lat.FORGET_S
    asyncio.run(two.sync())
    assert one.replica.encode() not in redis.hashes["sg:lat:m"]


def test_the_route_feature_shares_stats_only_with_a_store():
    from sidegate.core.feature import collect
    from sidegate.features.route.feature import RouteFeature

    cfg = make_cfg({"m": LAT})
    assert collect([RouteFeature(cfg)]).starts == ()  # no store: nothing runs in the background

    class StubStore:
        redis = FakeRedis()

    feature = RouteFeature(cfg, store=StubStore())  # type: ignore[arg-type]
    hooks = collect([feature])
    assert len(hooks.starts) == 1 and len(hooks.closes) == 1

    async def run() -> None:
        await hooks.starts[0]()
        ctx = ctx_for("m")
        ctx.allowed_models = ("*",)
        await feature.on_request(ctx)
        assert ctx.route == "m@a" and ctx.meta["reason"] == "latency:explore"
        feature.on_complete(done("a", 0.2))
        await asyncio.sleep(lat.SYNC_S + 0.2)
        assert StubStore.redis.hashes["sg:lat:m"]  # written by the background sync
        await hooks.closes[0]()
        assert feature.latency._task is None

    asyncio.run(run())
