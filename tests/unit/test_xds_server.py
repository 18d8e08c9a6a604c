"""The xDS server without Envoy: every rendered resource becomes its protobuf message, pushes go in
make-before-break order, a NACK stops the change and keeps the last ACKed state."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.config.route.v3.route_pb2 import RouteConfiguration
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest, DiscoveryResponse
from google.protobuf import json_format
from google.rpc.status_pb2 import Status

from sidegate import config
from sidegate.config.routing import routing_doc, with_routing
from sidegate.wire import CONFIG_VERSION_HEADER
from sidegate.xds import server as xds_server
from sidegate.xds.resources import CLUSTER, LISTENER, ROUTE, SHORT, snapshot
from sidegate.xds.server import AdsServer

BASE = {
    "providers": {
        "openai": {"api": "openai", "base_url": "http://127.0.0.1:1", "api_key_env": "X"},
        "anthropic": {"api": "anthropic", "base_url": "http://127.0.0.1:2", "api_key_env": "Y"},
    },
    "models": {
        "gpt-4o-mini": {"routes": [{"provider": "openai"}, {"provider": "anthropic", "model": "claude"}]},
        "claude": {"routes": [{"provider": "anthropic"}]},
    },
}


def _cfg(**services: Any) -> config.SidegateConfig:
    return config.parse({**BASE, "services": services}, env={})


@pytest.mark.parametrize("services", [{}, {"front": "http", "auth": "inline"}, {"direct_lane": False}])
def test_every_rendered_resource_parses_into_its_message(services):
    snap = snapshot(_cfg(**services), 7)
    assert set(snap.resources[LISTENER]) == {"sidegate"} and set(snap.resources[ROUTE]) == {"sidegate"}
    assert {"provider.openai", "provider.anthropic", "sidegate_extproc"} <= set(snap.resources[CLUSTER])
    lst = Listener()
    lst.ParseFromString(snap.resources[LISTENER]["sidegate"].value)
    hcm = json_format.MessageToDict(lst, preserving_proto_field_name=True)["filter_chains"][0]["filters"][0][
        "typed_config"
    ]
    assert hcm["rds"]["route_config_name"] == "sidegate" and "route_config" not in hcm
    assert hcm["rds"]["config_source"]["ads"] == {}
    assert hcm["http_filters"][0]["name"] == "sidegate.config_version"
    rc = RouteConfiguration()
    rc.ParseFromString(snap.resources[ROUTE]["sidegate"].value)
    vhost = json_format.MessageToDict(rc, preserving_proto_field_name=True)["virtual_hosts"][0]
    per = vhost["typed_per_filter_config"]["sidegate.config_version"]["mutations"]["request_mutations"][0][
        "append"
    ]
    assert (
        per["header"] == {"key": CONFIG_VERSION_HEADER, "value": "7"}
        and per["append_action"] == "OVERWRITE_IF_EXISTS_OR_ADD"
    )
    # a field xds-protos lacks travels as an unknown field (Envoy 1.40 reads it): retries refresh the cluster
    assert b"\x70\x01" in snap.resources[ROUTE]["sidegate"].value
    for name, res in snap.resources[CLUSTER].items():
        c = Cluster()
        c.ParseFromString(res.value)
        assert c.name == name


def test_an_identical_render_is_not_pushed_again():
    ads = AdsServer(None)
    assert ads.set_target(snapshot(_cfg(), 3))
    assert not ads.set_target(snapshot(_cfg(), 3))
    assert ads.set_target(snapshot(_cfg(), 4))  # the routes carry the version


class FakeEnvoy:
    """The context of one ADS stream: records what the server writes; answers each push with an
    ACK (or a NACK for the types in `nack`)."""

    def __init__(
        self, requests: asyncio.Queue[DiscoveryRequest | None], nack: set[str] | None = None
    ) -> None:
        self.requests, self.nack = requests, nack or set()
        self.pushed: list[tuple[str, list[str]]] = []

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return []

    async def write(self, resp: DiscoveryResponse) -> None:
        names = []
        for a in resp.resources:
            msg = {CLUSTER: Cluster, LISTENER: Listener, ROUTE: RouteConfiguration}[resp.type_url]()
            msg.ParseFromString(a.value)
            names.append(msg.name)
        self.pushed.append((SHORT[resp.type_url], sorted(names)))
        req = DiscoveryRequest(
            type_url=resp.type_url, response_nonce=resp.nonce, version_info=resp.version_info
        )
        if SHORT[resp.type_url] in self.nack:
            req.error_detail.CopyFrom(Status(code=3, message="bad config"))
        await self.requests.put(req)


async def _requests(q: asyncio.Queue[DiscoveryRequest | None]):
    while (req := await q.get()) is not None:
        yield req


async def _settle(envoy: FakeEnvoy, n: int) -> None:
    for _ in range(200):
        if len(envoy.pushed) >= n:
            await asyncio.sleep(0.01)
            return
        await asyncio.sleep(0.01)


def _run(scenario):
    return asyncio.run(asyncio.wait_for(scenario(), 10))


def _connect(
    ads: AdsServer, version: str = ""
) -> tuple[asyncio.Queue[DiscoveryRequest | None], FakeEnvoy, asyncio.Task[None]]:
    """A fake Envoy's ADS stream subscribing to clusters, listeners and the `sidegate` routes (naming
    `version` as the one it has): its request queue (None ends the stream), the Envoy, the stream's task."""
    q: asyncio.Queue[DiscoveryRequest | None] = asyncio.Queue()
    envoy = FakeEnvoy(q)
    for t, names in ((CLUSTER, []), (LISTENER, []), (ROUTE, ["sidegate"])):
        q.put_nowait(DiscoveryRequest(type_url=t, resource_names=names, version_info=version))
    return q, envoy, asyncio.create_task(ads.StreamAggregatedResources(_requests(q), envoy))


async def _serving(
    cfg: config.SidegateConfig,
) -> tuple[AdsServer, asyncio.Queue[DiscoveryRequest | None], FakeEnvoy, asyncio.Task[None]]:
    """An ADS server serving `cfg` as routing version 1 and a fake Envoy that has taken all three
    pushes (CDS, LDS, RDS): the server, then what _connect gives."""
    ads = AdsServer(None)
    ads.set_target(snapshot(cfg, 1))
    q, envoy, task = _connect(ads)
    await _settle(envoy, 3)
    return ads, q, envoy, task


def _swap_anthropic_for_mistral(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` with provider anthropic replaced by a new one, mistral, that gpt-4o-mini now routes to."""
    swapped = {**doc, "providers": {**doc["providers"], "mistral": {"api": "openai", "base_url": "http://127.0.0.1:3", "api_key_env": "Z"}},
               "models": {"gpt-4o-mini": {"routes": [{"provider": "openai"}, {"provider": "mistral"}]}}}  # fmt: skip
    swapped["providers"].pop("anthropic")
    return swapped


def test_make_before_break_order_on_a_provider_change():
    cfg = _cfg(
        direct_lane=False
    )  # (the direct lane's filter lists the providers: the listener would change too)
    doc = routing_doc(cfg)
    swapped = _swap_anthropic_for_mistral(doc)

    async def scenario():
        ads, q, envoy, task = await _serving(with_routing(cfg, doc))
        assert [k for k, _ in envoy.pushed] == ["CDS", "LDS", "RDS"]
        envoy.pushed.clear()
        ads.set_target(snapshot(with_routing(cfg, swapped), 2))
        await _settle(envoy, 3)
        q.put_nowait(None)
        await task
        return envoy.pushed

    pushed = _run(scenario)
    assert [k for k, _ in pushed] == ["CDS", "RDS", "CDS"]
    union, final = pushed[0][1], pushed[2][1]
    assert "provider.anthropic" in union and "provider.mistral" in union  # old and new while routes move
    assert "provider.anthropic" not in final and "provider.mistral" in final


def test_a_nack_stops_the_change_and_keeps_the_last_acked_state(caplog):
    cfg = _cfg(direct_lane=False)
    doc = routing_doc(cfg)
    added = {**doc, "models": {**doc["models"], "new": {"routes": [{"provider": "openai"}]}}}
    before = xds_server.NACKS.labels("RDS")._value.get()

    async def scenario():
        ads, q, envoy, task = await _serving(with_routing(cfg, doc))
        stream = next(iter(ads.streams))
        acked_routes = stream.acked[ROUTE]
        envoy.nack = {"RDS"}
        envoy.pushed.clear()
        ads.set_target(snapshot(with_routing(cfg, added), 2))
        await _settle(envoy, 1)
        await asyncio.sleep(0.1)
        assert stream.acked[ROUTE] is acked_routes and stream.acked_version[ROUTE] == 1
        assert stream.refused == ads.target.key
        stream.wake.set()  # the refused snapshot is not offered again
        await asyncio.sleep(0.1)
        q.put_nowait(None)
        await task
        return envoy.pushed

    with caplog.at_level("ERROR", "sidegate.xds"):
        pushed = _run(scenario)
    assert [k for k, _ in pushed] == ["RDS"]
    assert xds_server.NACKS.labels("RDS")._value.get() == before + 1
    assert "bad config" in caplog.text and "keeps the last accepted" in caplog.text


def test_xds_mode_bootstrap_holds_only_envoy_s_own_settings_and_the_xds_cluster(tmp_path, capsys):
    import subprocess

    import yaml

    from sidegate import cli, trust
    from sidegate.bootstrap import render
    from sidegate.supervisor import envoy_binary

    cfg = _cfg()
    boot = render.xds_bootstrap(cfg)
    assert [c["name"] for c in boot["static_resources"]["clusters"]] == ["sidegate_xds"]
    assert "listeners" not in boot["static_resources"]
    ads = {"ads": {}, "resource_api_version": "V3"}
    assert boot["dynamic_resources"]["lds_config"] == ads and boot["dynamic_resources"]["cds_config"] == ads
    assert boot["dynamic_resources"]["ads_config"]["grpc_services"] == [
        {"envoy_grpc": {"cluster_name": "sidegate_xds"}}
    ]
    # `sidegate render` follows services.xds; --static gives the whole bootstrap
    path = tmp_path / "sidegate.yaml"
    path.write_text(yaml.safe_dump(BASE))
    assert cli.main(["render", "-c", str(path)]) == 0
    assert "dynamic_resources" in capsys.readouterr().out
    assert cli.main(["render", "-c", str(path), "--static"]) == 0
    static = yaml.safe_load(capsys.readouterr().out)
    assert (
        "dynamic_resources" not in static and static["static_resources"]["listeners"][0]["name"] == "sidegate"
    )
    # Envoy accepts it (with the token file it names)
    token = tmp_path / "token.yaml"
    trust.write_private(token, trust.token_file_text(trust.generate()))
    cfg.services.internal_token_file = str(token)
    f = tmp_path / "envoy.yaml"
    f.write_text(render.render_yaml(cfg, xds=True))
    out = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(f), "--use-dynamic-base-id", "-l", "error"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]


def test_an_envoy_reconnecting_with_older_clusters_keeps_them_until_the_new_routes_are_acked():
    """The stream broke, then a provider was swapped: Envoy comes back naming the cluster version it
    has (its routes still use those clusters), so they go only after the new routes (make before break)."""
    cfg = _cfg(direct_lane=False)
    doc = routing_doc(cfg)
    swapped = _swap_anthropic_for_mistral(doc)

    async def scenario():
        ads, q, _, task = await _serving(with_routing(cfg, doc))
        had = next(iter(ads.streams)).acked[CLUSTER]
        version = f"1.{xds_server.digest(had)}"
        q.put_nowait(None)  # the stream breaks
        await task
        ads.set_target(snapshot(with_routing(cfg, swapped), 2))
        q2: asyncio.Queue[DiscoveryRequest | None] = asyncio.Queue()
        envoy2 = FakeEnvoy(q2)
        q2.put_nowait(DiscoveryRequest(type_url=CLUSTER, version_info=version))
        q2.put_nowait(DiscoveryRequest(type_url=LISTENER, version_info="1.x"))
        q2.put_nowait(DiscoveryRequest(type_url=ROUTE, resource_names=["sidegate"], version_info="1.y"))
        task2 = asyncio.create_task(ads.StreamAggregatedResources(_requests(q2), envoy2))
        await _settle(envoy2, 4)
        q2.put_nowait(None)
        await task2
        return envoy2.pushed

    pushed = _run(scenario)
    kinds = [k for k, _ in pushed]
    assert kinds == ["CDS", "LDS", "RDS", "CDS"]
    assert "provider.anthropic" in pushed[0][1] and "provider.mistral" in pushed[0][1]
    assert "provider.anthropic" not in pushed[-1][1]


def test_a_changed_file_the_store_could_not_take_is_seeded_at_the_next_check(tmp_path, monkeypatch, caplog):
    """A ConfigMap change during a store outage still applies once the store answers (the file is
    not taken as seeded before the seed succeeded); the outage is logged once, not every poll."""
    from sidegate import routingstore
    from sidegate.xds import follower as follower_mod

    path = tmp_path / "sidegate.yaml"
    path.write_text("a")
    seeded: list[str] = []
    down = {"on": True}

    async def seed_file(redis, cfg, *, path=None):
        if down["on"]:
            raise ConnectionError("store down")
        seeded.append(path)
        return 2

    async def version(redis):  # (the poll's read gets through: only the seed's transaction fails)
        return 1

    monkeypatch.setattr(routingstore, "seed_file", seed_file)
    monkeypatch.setattr(routingstore, "version", version)
    monkeypatch.setattr(routingstore, "POLL_S", 0.01)
    monkeypatch.setattr(follower_mod, "FILE_CHECK_S", 0.0)
    f = follower_mod.Follower(_cfg(), path, None, AdsServer(None), lambda p: _cfg())  # type: ignore[arg-type]
    f.seen = 1
    path.write_text("bb")  # the ConfigMap changed

    async def scenario():
        task = asyncio.create_task(f.run())
        await asyncio.sleep(0.2)
        assert seeded == []
        down["on"] = False
        for _ in range(100):
            if seeded:
                break
            await asyncio.sleep(0.01)
        task.cancel()

    with caplog.at_level("INFO", "sidegate.xds"):
        _run(scenario)
    assert seeded == [str(path)]
    assert caplog.text.count("following the store failed") == 1 and "answers again" in caplog.text


def test_the_file_s_document_is_never_pushed_over_a_live_version_envoy_has(caplog):
    """The xDS server restarted while the store was unreachable: it has only the file's document
    (version 0). An Envoy that reconnects with live version 5 keeps it (no push), and gets the
    store's version as soon as the server has it."""
    cfg = _cfg(direct_lane=False)

    async def scenario():
        ads = AdsServer(None)
        ads.set_target(snapshot(cfg, 0))
        q, envoy, task = _connect(ads, "5.abc")
        await asyncio.sleep(0.2)
        held = list(envoy.pushed)
        ads.set_target(snapshot(cfg, 6))
        await _settle(envoy, 3)
        q.put_nowait(None)
        await task
        return held, envoy.pushed

    held, pushed = _run(scenario)
    assert held == []
    assert [k for k, _ in pushed] == ["CDS", "LDS", "RDS"]
    assert "waiting for the store" in caplog.text
