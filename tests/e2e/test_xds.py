"""Envoy fed over ADS by `sidegate serve xds` (services.xds, the default): it gets its listener,
routes and clusters from the xDS server, follows the store's routing document within a second, in
make-before-break order, and its config dump equals a fresh render of the same configuration."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx
import openai
import pytest
from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.config.route.v3.route_pb2 import RouteConfiguration
from google.protobuf import json_format

from sidegate import routingstore
from sidegate.config.routing import routing_doc, with_routing
from sidegate.store.redispy import client
from sidegate.wire import CONFIG_VERSION_HEADER
from sidegate.xds.resources import CLUSTER, LISTENER, ROUTE, snapshot, to_message


def _dump(stack) -> dict[str, Any]:
    return httpx.get(f"{stack.admin_url}/config_dump", timeout=5).json()


def _section(dump: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in dump["configs"] if c["@type"].endswith("." + kind))


def _envoy_state(stack) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(listeners, route configurations, clusters) Envoy serves with, by name (Envoy's wrappers off)."""
    dump = _dump(stack)
    listeners = {
        x["name"]: x["active_state"]["listener"]
        for x in _section(dump, "ListenersConfigDump").get("dynamic_listeners", [])
    }
    routes = {
        x["route_config"]["name"]: x["route_config"]
        for x in _section(dump, "RoutesConfigDump").get("dynamic_route_configs", [])
    }
    clusters = {
        x["cluster"]["name"]: x["cluster"]
        for x in _section(dump, "ClustersConfigDump").get("dynamic_active_clusters", [])
    }
    return listeners, routes, clusters


def _commit(stack, doc: dict[str, Any]) -> int:
    async def go() -> int:
        r = client(stack.sup.redis_url)
        try:
            return await routingstore.commit(r, doc, actor="test", source="test")
        finally:
            await r.aclose()

    return asyncio.run(go())


def _current(stack) -> routingstore.Version:
    async def go() -> routingstore.Version:
        r = client(stack.sup.redis_url)
        try:
            v = await routingstore.current(r)
            assert v is not None
            return v
        finally:
            await r.aclose()

    return asyncio.run(go())


def _wait(pred, timeout_s: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if pred():
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError("timed out")


def _version_on_routes(route: dict[str, Any]) -> str:
    per = route["virtual_hosts"][0]["typed_per_filter_config"]["sidegate.config_version"]
    return per["mutations"]["request_mutations"][0]["append"]["header"]["value"]


def _normal(data: dict[str, Any], message: type) -> dict[str, Any]:
    """A resource through the same conversion (Envoy's JSON and a render then compare equal; as
    dicts: the bytes of a nested Any depend on the JSON's key order)."""
    return json_format.MessageToDict(to_message(data, message), preserving_proto_field_name=True)


def test_envoy_gets_everything_over_ads_and_serves_chat(stack):
    dump = _dump(stack)
    static = [c["cluster"]["name"] for c in _section(dump, "ClustersConfigDump").get("static_clusters", [])]
    assert static == ["sidegate_xds"]
    listeners, routes, clusters = _envoy_state(stack)
    assert set(listeners) == {"sidegate"} and set(routes) == {"sidegate"}
    assert {"provider.openai", "provider.anthropic", "sidegate_extproc"} <= set(clusters)
    hcm = listeners["sidegate"]["filter_chains"][0]["filters"][0]["typed_config"]
    assert "route_config" not in hcm and hcm["rds"]["route_config_name"] == "sidegate"
    assert _version_on_routes(routes["sidegate"]) == str(_current(stack).number)
    c = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=stack.keys["acme"].key)
    r = c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content


def test_the_version_header_never_reaches_the_provider(stack, fake_openai):
    """(A client's own value is replaced by Envoy's first filter, verified on 1.40 with an ext_authz
    HTTP check request: it carried the routes' version, not the client's.)"""
    c = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=stack.keys["acme"].key)
    # the full lane (a renamed model: the per-try stage translates) and the direct lane
    c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}],
                              extra_headers={CONFIG_VERSION_HEADER: "999"})  # fmt: skip
    assert CONFIG_VERSION_HEADER not in {k.lower() for k in fake_openai.requests[-1].headers}
    c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                              extra_headers={CONFIG_VERSION_HEADER: "999"})  # fmt: skip
    headers = {k.lower() for k in fake_openai.requests[-1].headers}
    assert CONFIG_VERSION_HEADER not in headers


@pytest.mark.alone  # bounds a duration
def test_a_store_change_reaches_envoy_within_a_second_and_equals_a_fresh_render(stack):
    cur = _current(stack)
    doc = dict(cur.doc)
    doc["models"] = {**doc["models"], "gpt-xds": {"routes": [{"provider": "openai", "model": "gpt-4o"}]}}
    n = _commit(stack, doc)
    took = _wait(lambda: _version_on_routes(_envoy_state(stack)[1]["sidegate"]) == str(n), 1.0)
    assert took < 1.0
    listeners, routes, clusters = _envoy_state(stack)
    assert any(r["name"] == "model.gpt-xds.0" for r in routes["sidegate"]["virtual_hosts"][0]["routes"])
    # one source of truth: what Envoy runs = a fresh render of the file's config with this document
    snap = snapshot(with_routing(stack.sup.cfg.model_copy(update={"services": stack.sup.cfg.services.model_copy(
        update={"internal_token_file": str(stack.workdir / "internal-token.yaml")})}), doc), n)  # fmt: skip
    for kind, got, message in (
        (LISTENER, listeners, Listener),
        (ROUTE, routes, RouteConfiguration),
        (CLUSTER, clusters, Cluster),
    ):
        want = {
            name: json_format.MessageToDict(_unpack(a, message), preserving_proto_field_name=True)
            for name, a in snap.resources[kind].items()
        }
        assert set(got) == set(want), kind
        for name in want:
            envoy = {k: v for k, v in got[name].items() if k not in ("last_updated", "version_info", "@type")}
            assert _normal(envoy, message) == want[name], (kind, name)


def _unpack(a, message):
    m = message()
    m.ParseFromString(a.value)
    return m


def test_a_removed_provider_goes_after_the_routes_that_named_it(stack):
    doc = dict(_current(stack).doc)
    doc["providers"] = {k: v for k, v in doc["providers"].items() if k != "anthropic"}
    doc["models"] = {
        k: v for k, v in doc["models"].items() if not any(r["provider"] == "anthropic" for r in v["routes"])
    }
    log = stack.workdir / "xds.log"
    before = len(log.read_text())
    n = _commit(stack, doc)
    _wait(lambda: "provider.anthropic" not in _envoy_state(stack)[2], 2.0)
    _, routes, _ = _envoy_state(stack)
    assert _version_on_routes(routes["sidegate"]) == str(n)
    assert not any(
        r["name"].startswith("model.claude") for r in routes["sidegate"]["virtual_hosts"][0]["routes"]
    )

    def acks() -> list[str]:
        return [
            line
            for line in log.read_text()[before:].splitlines()
            if "Envoy ACKed" in line and f" version {n}." in line
        ]

    # (Envoy applies the last CDS before the server has logged its ACK: wait for the line)
    _wait(lambda: any("Envoy ACKed CDS" in line for line in acks()), 2.0)
    kinds = [line.split("Envoy ACKed ")[1][:3] for line in acks()]
    # routes first, then the cluster they no longer name (never the listener: nothing in it
    # depends on the routing document, tests/e2e/test_xds_no_drain.py)
    assert kinds == ["RDS", "CDS"], acks()


def test_a_stream_in_flight_across_a_route_change_completes(stack, fake_openai):
    fake_openai.script([{"chunks": 8, "chunk_delay_s": 0.25}])
    c = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=stack.keys["acme"].key)
    got: list[str] = []
    started = threading.Event()

    def run() -> None:
        for chunk in c.chat.completions.create(model="gpt-4o-mini", stream=True,
                                               messages=[{"role": "user", "content": "one two three four five six seven eight"}]):  # fmt: skip
            started.set()
            if chunk.choices and chunk.choices[0].delta.content:
                got.append(chunk.choices[0].delta.content)

    t = threading.Thread(target=run)
    t.start()
    assert started.wait(10)
    doc = dict(_current(stack).doc)
    doc["models"] = {**doc["models"], "gpt-mid-stream": {"routes": [{"provider": "openai"}]}}
    n = _commit(stack, doc)
    _wait(lambda: _version_on_routes(_envoy_state(stack)[1]["sidegate"]) == str(n), 2.0)
    t.join(20)
    assert not t.is_alive() and len(got) >= 8


@pytest.fixture(autouse=True)
def _file_doc_back(stack):
    """Each test starts from the config file's routing document (a new version)."""
    yield
    _commit(stack, routing_doc(stack.sup.cfg))
