"""Routing policies (features/route/policy.py, latency.py): the ranking of each kind, the overrides,
the breaker's ejections, the latency EWMAs of several replicas combined, and the pinned routes
Envoy gets for them (bootstrap/routes.py)."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import orjson
import pytest

from sidegate import config
from sidegate.bootstrap.routes import route_config
from sidegate.config import BreakerConfig, SidegateConfig
from sidegate.core.completion import Completion
from sidegate.core.context import RequestContext
from sidegate.errors import Api, GatewayError
from sidegate.features.route import latency as lat
from sidegate.features.route.breaker import Breaker
from sidegate.features.route.latency import LatencyBoard, combine
from sidegate.features.route.policy import Policy, expected_output
from sidegate.lanes import preparable_first_try
from sidegate.wire import PROVIDER_OVERRIDE_HEADER


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


PROVIDERS = {
    p: {"api": "openai", "base_url": f"http://{p}", "api_key_env": f"K_{p.upper()}"} for p in ("a", "b", "c")
}


def make_cfg(models: dict[str, Any], prices: dict[str, Any] | None = None, **services: Any) -> SidegateConfig:
    return config.parse({
        "providers": PROVIDERS, "models": models, "quota": {"prices": prices or {}},
        **({"services": services} if services else {}),
    }, env={"K_A": "ka", "K_B": "kb", "K_C": "kc"})  # fmt: skip


COST = {
    "routes": [{"provider": "a", "model": "big"}, {"provider": "b", "model": "small"}],
    "policy": {"kind": "cost"},
}
PRICES = {
    "big": {"input_per_mtok": 5, "output_per_mtok": 15},
    "small": {"input_per_mtok": 0.15, "output_per_mtok": 0.6},
}


def ctx_for(model: str, tenant: str = "acme", headers: dict[str, str] | None = None, body: dict[str, Any] | None = None,
            api: Api = Api.OPENAI) -> RequestContext:  # fmt: skip
    body = body if body is not None else {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return RequestContext(path="/v1/chat/completions", method="POST", headers=headers or {}, api=api, tenant=tenant,
                          body=body, raw_body=orjson.dumps(body), model=model)  # fmt: skip


def policy(clock: Clock | None = None, wall: Clock | None = None) -> Policy:
    clock = clock or Clock()
    return Policy(Breaker(clock), LatencyBoard(clock=wall or Clock(1_700_000_000.0)), clock=clock)


def choose(p: Policy, cfg: SidegateConfig, ctx: RequestContext) -> str:
    return p.choose(ctx, cfg.models[ctx.model], cfg)


def eject(p: Policy, provider: str, model: str) -> None:
    p.breaker.record(provider, 429, BreakerConfig(), retry_after_s=30, model=model)


# -- ordered: today's route values -------------------------------------------------------------------


def test_ordered_models_keep_their_route_values():
    cfg = make_cfg({"m": {"routes": [{"provider": "a"}, {"provider": "b"}]},
                    "w": {"routes": [{"provider": "a", "priority": 0}, {"provider": "b", "priority": 0}]}})  # fmt: skip
    p = policy()
    ctx = ctx_for("m")
    assert choose(p, cfg, ctx) == "m" and ctx.meta == {"policy": "ordered", "reason": "ordered"}
    eject(p, "a", "m")
    ctx = ctx_for("m")
    assert choose(p, cfg, ctx) == "m#1" and ctx.meta == {
        "start": 1,
        "policy": "ordered",
        "reason": "breaker:skip",
    }
    assert choose(p, cfg, ctx_for("w")) == "w"
    assert not any(
        "@" in r["name"]
        for r in route_config(cfg, front_http=False, sidegate_filters=True)["virtual_hosts"][0]["routes"]
    )


# -- cost ----------------------------------------------------------------------------------------------


def test_cost_picks_the_cheapest_and_follows_the_prices_it_is_given():
    p = policy()
    ctx = ctx_for("m")
    cfg = make_cfg({"m": COST}, PRICES)
    assert choose(p, cfg, ctx) == "m@b" and ctx.meta == {
        "pin": "b",
        "policy": "cost",
        "reason": "cost:cheapest",
    }
    swapped = make_cfg(
        {"m": COST}, {"big": PRICES["small"], "small": PRICES["big"]}
    )  # another config version
    ctx = ctx_for("m")
    assert choose(p, swapped, ctx) == "m@a" and ctx.meta["reason"] == "cost:cheapest"


def test_cost_weighs_input_and_output_by_the_request():
    """Long prompt, short answer: the input price decides; a long answer: the output price."""
    prices = {
        "big": {"input_per_mtok": 1, "output_per_mtok": 20},
        "small": {"input_per_mtok": 10, "output_per_mtok": 2},
    }
    cfg = make_cfg({"m": COST}, prices)
    p = policy()
    long_prompt = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x" * 40_000}]}
    assert choose(p, cfg, ctx_for("m", body=long_prompt)) == "m@a"
    long_answer = {"model": "m", "max_tokens": 8000, "messages": [{"role": "user", "content": "hi"}]}
    assert choose(p, cfg, ctx_for("m", body=long_answer)) == "m@b"
    # no max tokens in the body: the model's default_max_tokens (4096) is the expected output
    assert choose(p, cfg, ctx_for("m")) == "m@b"


def test_unknown_price_is_the_most_expensive_and_all_unknown_keeps_the_order():
    cfg = make_cfg({"m": COST}, {"big": PRICES["big"]})  # `small` has no price
    p = policy()
    ctx = ctx_for("m")
    assert choose(p, cfg, ctx) == "m@a" and ctx.meta["reason"] == "cost:cheapest"
    none = make_cfg({"m": COST})
    ctx = ctx_for("m")
    assert choose(p, none, ctx) == "m@a" and ctx.meta["reason"] == "cost:unpriced"


def test_glob_prices_and_the_client_model_when_the_route_names_none():
    cfg = make_cfg({"gpt-x": {"routes": [{"provider": "a"}, {"provider": "b", "model": "cheap-1"}], "policy": {"kind": "cost"}}},
                   {"gpt-*": {"input_per_mtok": 1, "output_per_mtok": 1}, "cheap-*": {"input_per_mtok": 0.1, "output_per_mtok": 0.1}})  # fmt: skip
    assert choose(policy(), cfg, ctx_for("gpt-x")) == "gpt-x@b"


def test_cost_skips_an_ejected_cheapest():
    cfg = make_cfg({"m": COST}, PRICES)
    p = policy()
    eject(p, "b", "m")
    ctx = ctx_for("m")
    assert choose(p, cfg, ctx) == "m@a" and ctx.meta["reason"] == "breaker:skip"
    eject(p, "a", "m")  # all ejected: the chain's order, tried anyway
    ctx = ctx_for("m")
    assert choose(p, cfg, ctx) == "m" and ctx.meta["policy"] == "cost"


def test_expected_output_per_api():
    assert expected_output({"max_completion_tokens": 7, "max_tokens": 9, "n": 2}, 100, Api.OPENAI) == 14
    assert expected_output({"max_output_tokens": 5}, 100, Api.RESPONSES) == 5
    assert expected_output({"max_tokens": True}, 100, Api.ANTHROPIC) == 100
    assert (
        expected_output({"generationConfig": {"maxOutputTokens": 3, "candidateCount": 2}}, 100, Api.GEMINI)
        == 6
    )
    assert expected_output({}, 100, Api.GEMINI) == 100


# -- overrides -----------------------------------------------------------------------------------------


OVERRIDES = {"routes": [{"provider": "a", "weight": 9, "priority": 0}, {"provider": "b", "weight": 1, "priority": 0}, {"provider": "c"}],
             "policy": {"override_header": True, "tenants": {"canary-co": "b"}}}  # fmt: skip


def test_header_override_then_tenant_override_then_the_weights():
    cfg = make_cfg({"m": OVERRIDES})
    p = policy()
    ctx = ctx_for("m", headers={PROVIDER_OVERRIDE_HEADER: "c"}, tenant="canary-co")
    assert choose(p, cfg, ctx) == "m@c" and ctx.meta == {
        "pin": "c",
        "policy": "ordered",
        "reason": "override:header",
    }
    ctx = ctx_for("m", tenant="canary-co")
    assert choose(p, cfg, ctx) == "m@b" and ctx.meta["reason"] == "override:tenant"
    ctx = ctx_for("m", tenant="acme")
    assert choose(p, cfg, ctx) == "m" and ctx.meta == {"policy": "ordered", "reason": "ordered"}


def test_header_naming_no_provider_of_the_chain_is_refused():
    cfg = make_cfg({"m": OVERRIDES})
    with pytest.raises(GatewayError) as err:
        choose(policy(), cfg, ctx_for("m", headers={PROVIDER_OVERRIDE_HEADER: "openai"}))
    assert (
        err.value.status == 400
        and err.value.param == PROVIDER_OVERRIDE_HEADER
        and "'openai'" in err.value.message
    )


def test_header_is_ignored_where_the_policy_does_not_allow_it():
    cfg = make_cfg(
        {"m": {"routes": [{"provider": "a"}, {"provider": "b"}], "policy": {"tenants": {"x": "b"}}}}
    )
    ctx = ctx_for("m", headers={PROVIDER_OVERRIDE_HEADER: "nope"})
    assert choose(policy(), cfg, ctx) == "m" and ctx.meta["reason"] == "ordered"


def test_an_ejected_override_gives_way_to_the_policy():
    cfg = make_cfg(
        {"m": {**COST, "policy": {"kind": "cost", "override_header": True, "tenants": {"t": "a"}}}}, PRICES
    )
    p = policy()
    eject(p, "a", "m")
    ctx = ctx_for("m", tenant="t", headers={PROVIDER_OVERRIDE_HEADER: "a"})
    assert choose(p, cfg, ctx) == "m@b" and ctx.meta["reason"] == "breaker:skip"


# -- latency -------------------------------------------------------------------------------------------


LAT = {"routes": [{"provider": "a"}, {"provider": "b"}], "policy": {"kind": "latency"}}


def done(
    provider: str, ttft_s: float, status: int = 200, model: str = "m", streamed: bool = True
) -> Completion:
    return Completion(meta={"model": model, "policy": "latency"}, provider=provider, upstream_model=model, status=status,
                      usage=None, final=True, streamed=streamed, started_at=10.0, first_byte_at=10.0 + ttft_s,
                      ended_at=10.5 + ttft_s, chunks=3)  # fmt: skip


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


class FakeRedis:
    """The hash commands the board's sync uses, pipelined."""

    def __init__(self) -> None:
        self.hashes: dict[str, dict[bytes, bytes]] = {}

    def pipeline(self, transaction: bool = False) -> FakeRedis.Pipe:
        return FakeRedis.Pipe(self)

    class Pipe:
        def __init__(self, r: FakeRedis) -> None:
            self.r, self.ops = r, []

        def hset(self, key: str, field: str, value: bytes) -> None:
            self.ops.append(lambda: self.r.hashes.setdefault(key, {}).__setitem__(field.encode(), value) or 1)

        def pexpire(self, key: str, ms: int) -> None:
            self.ops.append(lambda: True)

        def hgetall(self, key: str) -> None:
            self.ops.append(lambda: dict(self.r.hashes.get(key, {})))

        def hdel(self, key: str, field: bytes) -> None:
            self.ops.append(lambda: self.r.hashes.get(key, {}).pop(field, None) and 1)

        async def execute(self) -> list[Any]:
            return [op() for op in self.ops]


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


# -- the routes Envoy has for them ---------------------------------------------------------------------


def _routes(cfg: SidegateConfig, front_http: bool = False) -> dict[str, dict[str, Any]]:
    vh = route_config(cfg, front_http=front_http, sidegate_filters=True)["virtual_hosts"][0]
    return {r["name"]: r for r in vh["routes"]}


def _groups(route: dict[str, Any]) -> list[list[tuple[str, int]]]:
    pgs = route["route"]["inline_cluster_specifier_plugin"]["extension"]["typed_config"]["priority_groups"]
    return [[(c["cluster_name"], c["weight"]) for c in g["clusters"]] for g in pgs]


def test_pinned_routes_start_on_their_provider_then_keep_the_chain():
    cfg = make_cfg({"m": OVERRIDES}, direct_lane=True)
    routes = _routes(cfg)
    assert {"model.m.0", "model.m.1", "model.m@a", "model.m@b", "model.m@c", "model.m@b~direct"} <= set(
        routes
    )
    b = routes["model.m@b"]
    assert b["match"]["headers"][0]["string_match"]["exact"] == "m@b"
    assert _groups(b) == [[("provider.b", 1)], [("provider.a", 9)], [("provider.c", 1)]]
    assert b["route"]["retry_policy"]["num_retries"] == 2
    assert _groups(routes["model.m@c"]) == [[("provider.c", 1)], [("provider.a", 9), ("provider.b", 1)]]
    assert _groups(routes["model.m@b~direct"])[0] == [("provider.b~direct", 1)]
    http = _routes(make_cfg({"m": OVERRIDES}, front="http", auth="inline"), front_http=True)
    assert _groups(http["model.m@c~try"])[0] == [("provider.c~try", 1)]


def test_the_try_lane_prepares_the_pinned_provider():
    cfg = make_cfg({"m": OVERRIDES})
    assert preparable_first_try(cfg, "m", 0) is None  # a weighted first group: the Lua calls
    assert preparable_first_try(cfg, "m", 0, "c") == "c"
    assert preparable_first_try(cfg, "m", 0, "gone") is None


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
