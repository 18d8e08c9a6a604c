"""Routing policies (features/route/policy.py): the cost ranking, the overrides, the breaker's
ejections, and the pinned routes Envoy gets for them (bootstrap/routes.py). The latency policy:
test_route_latency.py."""

from __future__ import annotations

from typing import Any

import pytest
from route_helpers import COST, PRICES, choose, ctx_for, eject, make_cfg, policy

from sidegate.bootstrap.routes import route_config
from sidegate.config import SidegateConfig
from sidegate.errors import Api, GatewayError
from sidegate.features.route.policy import expected_output
from sidegate.lanes import preparable_first_try
from sidegate.wire import PROVIDER_OVERRIDE_HEADER

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
