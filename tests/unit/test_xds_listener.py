"""The listener (LDS) does not depend on the routing document: providers, models, prices, routing
policies and the cache/guard defaults change routes (RDS) and clusters (CDS) only. A listener
update makes Envoy drain every client connection of the old filter chain, so it must never come
with a routing change (docs/control-plane.md "Live routing over xDS")."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from sidegate import config
from sidegate.config.routing import routing_doc, with_routing
from sidegate.xds.resources import CLUSTER, LISTENER, ROUTE, snapshot

ENV = {"KEY_A": "sk-aaaaaaaaaaaa", "KEY_B": "sk-bbbbbbbbbbbb", "KEY_C": "sk-cccccccccccc"}

BASE: dict[str, Any] = {
    "providers": {
        "a": {"api": "openai", "base_url": "http://127.0.0.1:1", "api_key_env": "KEY_A"},
        "b": {"api": "anthropic", "base_url": "http://127.0.0.1:2", "api_key_env": "KEY_B"},
    },
    "models": {
        "gpt": {"routes": [{"provider": "a"}]},
        "claude": {"routes": [{"provider": "b"}]},
    },
    "quota": {"prices": {"gpt": {"input_per_mtok": 1, "output_per_mtok": 2}}},
}


def _changed(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` with every routing section changed: a new direct-lane provider in a chain, a new
    model with a cost policy over two providers, another price, other default policies."""
    doc = copy.deepcopy(doc)
    doc["providers"]["c"] = {"api": "openai", "base_url": "http://127.0.0.1:3", "api_key_env": "KEY_C"}
    doc["models"]["gpt"] = {"routes": [{"provider": "a"}, {"provider": "c"}]}
    doc["models"]["cheap"] = {
        "routes": [{"provider": "a", "model": "gpt"}, {"provider": "c", "model": "gpt"}],
        "policy": {"kind": "cost"},
    }
    doc["models"].pop("claude")
    doc["providers"].pop("b")
    doc["prices"] = {
        "gpt": {"input_per_mtok": 5, "output_per_mtok": 7},
        "cheap": {"input_per_mtok": 0.1, "output_per_mtok": 0.2},
    }
    doc["defaults"] = {"cache": {"exact": True}, "guard": None}
    return doc


@pytest.mark.parametrize(
    "services",
    [{}, {"front": "http", "auth": "inline"}, {"direct_lane": False}],
    ids=["ext_proc", "http-front", "no-direct-lane"],
)
def test_a_routing_change_leaves_the_listener_byte_for_byte(services: dict[str, Any]) -> None:
    base = config.parse({**BASE, "services": services}, env=ENV)
    doc = routing_doc(base)
    other = with_routing(base, _changed(doc))
    assert set(other.providers) == {"a", "c"} and other.models["cheap"].policy.kind == "cost"
    one, two = snapshot(base, 1), snapshot(other, 2)
    assert one.resources[LISTENER] == two.resources[LISTENER]  # serialized deterministically
    assert one.digests[LISTENER] == two.digests[LISTENER]
    assert one.digests[ROUTE] != two.digests[ROUTE]
    assert one.digests[CLUSTER] != two.digests[CLUSTER]
    assert "provider.c" in two.resources[CLUSTER] and "provider.b" not in two.resources[CLUSTER]
    # also across the store's first version (0: nothing seeded yet, no version header on the routes)
    assert snapshot(base, 0).resources[LISTENER] == one.resources[LISTENER]


def test_the_listener_names_no_provider() -> None:
    """What the direct lane's error filter needs of a provider comes with its routes (metadata)."""
    cfg = config.parse(BASE, env=ENV)
    listener = snapshot(cfg, 1).resources[LISTENER]["sidegate"].value
    for needle in (b"KEY_A", b"KEY_B", b"127.0.0.1:1", b'"a"', b"provider 'a'", b"sk-aaaaaaaaaaaa"):
        assert needle not in listener, needle
    routes = snapshot(cfg, 1).resources[ROUTE]["sidegate"].value
    assert b"KEY_A" in routes and b"sk-aaaaaaaaaaaa" not in routes  # the variable's name, never the key
