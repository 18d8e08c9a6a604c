"""Live routing in the Python services (sidegate/core/live.py): the follower moves with the store's
version and ignores a bad document; kept versions; the features' `reconfigure` hook; the per-try
stage keeps removed providers while a kept version names them; the per-request version
(`x-sidegate-config-version`) picks the model table, loading a newer one once."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import orjson
import pytest

from sidegate import config, routingstore
from sidegate.app import App, default_features
from sidegate.config.routing import routing_doc
from sidegate.core import live
from sidegate.core.context import RequestContext
from sidegate.core.intake import open_request
from sidegate.core.live import ROUTING_VERSION_KEY, Follower, Versions
from sidegate.core.pipeline import Forward
from sidegate.core.tries import TryStage
from sidegate.errors import GatewayError
from sidegate.features.route.feature import RouteFeature
from sidegate.wire import CONFIG_VERSION_HEADER

ENV = {"K1": "sk-1", "K2": "sk-2"}
CFG = config.parse({
    "services": {"auth": "ext_authz"},  # the gRPC front: the tenant comes with the request, as from ext_authz
    "providers": {
        "oai": {"api": "openai", "base_url": "http://127.0.0.1:9", "api_key_env": "K1"},
        "ant": {"api": "anthropic", "base_url": "http://127.0.0.1:11", "api_key_env": "K2"},
    },
    "models": {"gpt": {"routes": [{"provider": "oai"}]}},
    "quota": {"prices": {"gpt": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}},
}, env=ENV)  # fmt: skip
DOC = routing_doc(CFG)


class FakeRedis:
    """The two reads the follower makes (GET of the version and of a document), counted."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.gets = 0

    async def get(self, key: str) -> bytes | None:
        self.gets += 1
        return self.data.get(key)

    def commit(self, doc: dict[str, Any]) -> int:
        n = int(self.data.get(routingstore.VERSION, b"0")) + 1
        self.data[routingstore.doc_key(n)] = orjson.dumps(doc)
        self.data[routingstore.VERSION] = str(n).encode()
        return n


def with_model(doc: dict[str, Any], name: str, provider: str = "ant") -> dict[str, Any]:
    out = copy.deepcopy(doc)
    out["models"][name] = {"routes": [{"provider": provider}]}
    return out


def follower(redis: FakeRedis) -> tuple[Versions, Follower]:
    versions = Versions(CFG)
    return versions, Follower(redis, CFG, versions)  # type: ignore[arg-type]


def test_the_follower_moves_with_the_version_and_keeps_the_last_few() -> None:
    redis = FakeRedis()
    versions, f = follower(redis)
    told: list[int] = []
    versions.listeners.append(lambda cfg: told.append(len(cfg.models)))
    for i in range(live.KEEP + 3):
        redis.commit(with_model(DOC, f"m{i}"))
        asyncio.run(f.load())
    assert versions.version == live.KEEP + 3 and "m10" in versions.latest.models
    assert len(versions.configs) == live.KEEP + 1 and min(versions.configs) == 3
    assert told == [2] * (live.KEEP + 3)  # each version: the file's model and its own
    assert versions.pick(5) is versions.configs[5]
    assert versions.pick(1) is versions.configs[3]  # evicted: the oldest kept
    assert versions.pick(99) is None  # newer: the caller loads it
    gets = redis.gets
    asyncio.run(f.load())  # nothing moved: one GET
    assert redis.gets == gets + 1


def test_a_document_that_fails_validation_is_ignored() -> None:
    redis = FakeRedis()
    versions, f = follower(redis)
    bad = with_model(DOC, "broken", provider="nope")
    redis.commit(bad)
    asyncio.run(f.load())
    assert versions.version == 0 and versions.latest is CFG and f.refused == {1}
    redis.commit(with_model(DOC, "fine"))
    asyncio.run(f.load())
    assert versions.version == 2 and "fine" in versions.latest.models


def test_the_poll_follows_within_a_second() -> None:
    async def main() -> None:
        redis = FakeRedis()
        versions, f = follower(redis)
        f.poll_s = 0.05
        await f.start()
        try:
            redis.commit(with_model(DOC, "new"))
            for _ in range(60):
                if "new" in versions.latest.models:
                    break
                await asyncio.sleep(0.02)
            assert "new" in versions.latest.models
        finally:
            await f.close()

    asyncio.run(main())


def _request(model: str, version: int | None = None) -> RequestContext:
    headers = {CONFIG_VERSION_HEADER: str(version)} if version is not None else {}
    ctx = open_request("/v1/chat/completions", "POST", headers, tenant="t", key_id="k", allowed_models=("*",))
    assert isinstance(ctx, RequestContext)
    ctx.raw_body = orjson.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]})
    return ctx


def test_the_request_version_picks_the_model_table_and_loads_a_newer_one_once() -> None:
    redis = FakeRedis()
    app = App(CFG, default_features(CFG))
    app.follower = Follower(redis, CFG, app.versions)  # type: ignore[arg-type]
    redis.commit(DOC)  # 1: the file's
    v2 = redis.commit(with_model(DOC, "claude"))  # 2: a model added

    async def main() -> None:
        await app.follower.load(1)  # type: ignore[union-attr]
        assert app.versions.version == 1
        # Envoy names version 2 before the poll saw it: loaded now, once for all the requests
        outs = await asyncio.gather(*(app.gateway.run(_request("claude", v2)) for _ in range(5)))
        assert all(
            isinstance(o, Forward) and o.route == "claude" and o.meta[ROUTING_VERSION_KEY] == 2 for o in outs
        )
        assert app.versions.version == 2
        # an older route table (version 1) has no such model: refused as unknown, the latest serves it
        old = await app.gateway.run(_request("claude", 1))
        assert not isinstance(old, Forward) and old.status == 400
        latest = await app.gateway.run(_request("claude"))
        assert isinstance(latest, Forward) and ROUTING_VERSION_KEY not in latest.meta

    asyncio.run(main())


def test_features_reconfigure_prices_and_policies() -> None:
    app = App(CFG, default_features(CFG))
    doc = copy.deepcopy(DOC)
    doc["prices"]["gpt"] = {"input_per_mtok": 10.0, "output_per_mtok": 20.0}
    doc["models"]["gpt"]["guard"] = {}  # the default guard policy
    doc["defaults"] = {"cache": {"exact": True}}
    cfg = config.routing.with_routing(CFG, doc)
    app.versions.put(1, cfg)
    route = next(f for f in app.features if isinstance(f, RouteFeature))
    assert route.cfg is cfg and route.models is cfg.models
    guard = next(f for f in app.features if f.name == "guard")
    assert guard.cfg.guard_policy("gpt") is not None  # type: ignore[attr-defined]
    metrics = next(f for f in app.features if f.name == "metrics")
    assert metrics.cost.prices["gpt"].input_per_mtok == 10.0  # type: ignore[attr-defined]
    assert app.tries.cfg is cfg and cfg.cache_policy("gpt").exact


def test_the_try_stage_keeps_a_removed_provider_while_a_kept_version_names_it() -> None:
    redis = FakeRedis()
    app = App(CFG, default_features(CFG))
    f = Follower(redis, CFG, app.versions)  # type: ignore[arg-type]
    two = with_model(DOC, "claude")
    redis.commit(two)
    asyncio.run(f.load())
    oai_before = app.tries.credentials["oai"]
    ant_before = app.tries.credentials["ant"]
    gone = copy.deepcopy(two)
    del gone["models"]["claude"], gone["providers"]["ant"]
    gone["providers"]["oai"]["headers"] = {"x-changed": "1"}
    redis.commit(gone)
    asyncio.run(f.load())
    stage = app.tries
    assert "ant" in stage.credentials and stage.credentials["ant"] is ant_before  # version 1 still names it
    assert stage.credentials["oai"] is not oai_before and oai_before in stage.retired  # changed: rebuilt
    # a retry of a version-1 request still reaches `ant`, with version 1's model
    t = stage.start_try({"api": "openai", "model": "claude", ROUTING_VERSION_KEY: 1}, "provider.ant", 2)
    assert t.provider_name == "ant"
    # and a request that named no version finds the newest kept version that has it
    t = stage.start_try({"api": "openai", "model": "claude"}, "provider.ant", 1)
    assert t.provider_name == "ant"
    # once no kept version names it, it is retired
    for i in range(live.KEEP + 1):
        redis.commit(with_model(gone, f"x{i}", provider="oai"))
        asyncio.run(f.load())
    assert "ant" not in stage.credentials and ant_before in stage.retired
    with pytest.raises(GatewayError):
        stage.start_try({"api": "openai", "model": "claude"}, "provider.ant", 1)


def test_a_try_of_an_unknown_provider_or_newer_version_asks_to_learn_it() -> None:
    redis = FakeRedis()
    stage = TryStage(CFG)
    versions = Versions(CFG)
    stage.versions = versions
    assert stage.ready({}, "provider.oai")
    assert not stage.ready({}, "provider.new")
    assert not stage.ready({ROUTING_VERSION_KEY: 1}, "provider.oai")
    assert stage.ready({}, "")  # no provider named (a local answer's log entry): nothing to load
    f = Follower(redis, CFG, versions)  # type: ignore[arg-type]
    versions.listeners.append(stage.reconfigure)
    doc = copy.deepcopy(DOC)
    doc["providers"]["new"] = {"api": "openai", "base_url": "http://127.0.0.1:12", "api_key_env": "K1"}
    doc["models"]["fresh"] = {"routes": [{"provider": "new"}]}
    redis.commit(doc)
    assert f is not None
    asyncio.run(stage.learn({ROUTING_VERSION_KEY: 1}))
    assert stage.ready({ROUTING_VERSION_KEY: 1}, "provider.new")
    t = stage.start_try({"api": "openai", "model": "fresh", ROUTING_VERSION_KEY: 1}, "provider.new", 1)
    assert t.provider_name == "new"


def test_a_static_bootstrap_never_reads_the_version_header() -> None:
    """Without xDS, Envoy passes a client's header on: the gateway routes with the latest."""
    static = CFG.model_copy(update={"services": CFG.services.model_copy(update={"xds": False})})
    app = App(static, default_features(static))
    assert app.gateway.versions is None
    out = asyncio.run(app.gateway.run(_request("gpt", 7)))
    assert isinstance(out, Forward) and ROUTING_VERSION_KEY not in out.meta


def test_a_direct_lane_entry_of_an_unknown_provider_waits_for_its_version() -> None:
    """Contract 2 in the access-log adapter: the completion hooks see the entry after the load."""
    from envoy.data.accesslog.v3 import accesslog_pb2

    from extproc.direct import AccessLogAdapter
    from sidegate import wire
    from sidegate.envoy_pb import struct
    from sidegate.trust import Token

    redis = FakeRedis()
    stage = TryStage(CFG)
    stage.versions = Versions(CFG)
    stage.versions.listeners.append(stage.reconfigure)
    Follower(redis, CFG, stage.versions)  # type: ignore[arg-type]
    doc = copy.deepcopy(DOC)
    doc["providers"]["new"] = {"api": "openai", "base_url": "http://127.0.0.1:12", "api_key_env": "K1"}
    doc["models"]["fresh"] = {"routes": [{"provider": "new"}]}
    redis.commit(doc)
    seen: list[tuple[str, bool]] = []
    adapter = AccessLogAdapter([lambda c: seen.append((c.provider, "new" in stage.credentials))], Token("t"),
                               providers=stage)  # fmt: skip
    entry = accesslog_pb2.HTTPAccessLogEntry()
    meta = {"lane": "direct", "model": "fresh", "tenant": "t", "api": "openai"}
    entry.common_properties.metadata.filter_metadata[wire.META_NS].CopyFrom(struct(meta))
    entry.common_properties.upstream_cluster = "provider.new~direct"
    entry.response.response_code.value = 200

    async def main() -> None:
        adapter.on_entry(entry)
        assert seen == []  # waiting for the load
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.01)

    asyncio.run(main())
    assert seen == [("new", True)]


def test_a_version_this_process_skipped_is_loaded_not_guessed() -> None:
    """Two changes within one poll: this process went from 1 to 3, but Envoy's routes may be at 2
    (the xDS server saw it): a request routed with 2 gets version 2's models, not the oldest kept."""
    redis = FakeRedis()
    versions, f = follower(redis)
    redis.commit(with_model(DOC, "one"))
    asyncio.run(f.load())
    redis.commit(with_model(DOC, "two"))
    redis.commit(with_model(DOC, "three"))
    asyncio.run(f.load())
    assert sorted(versions.configs) == [0, 1, 3] and versions.missing(2) and not versions.missing(1)
    assert versions.pick(2) is None
    cfg = asyncio.run(versions.config_of(2))
    assert "two" in cfg.models and "three" not in cfg.models
    assert versions.version == 3 and versions.pick(2) is cfg and not versions.missing(2)


def test_a_try_of_a_provider_the_latest_chain_dropped_uses_the_version_that_routes_it() -> None:
    """A provider leaves a model's chain but stays configured: a try of it that named no version (or
    one no longer kept) finds the newest kept version whose chain has it, never a crash; a try no
    kept chain routes is refused in the client's format."""
    redis = FakeRedis()
    app = App(CFG, default_features(CFG))
    f = Follower(redis, CFG, app.versions)  # type: ignore[arg-type]
    both = copy.deepcopy(DOC)
    both["models"]["gpt"] = {"routes": [{"provider": "oai"}, {"provider": "ant", "model": "claude-x"}]}
    redis.commit(both)
    asyncio.run(f.load())
    redis.commit(DOC)  # `ant` is still a provider, no longer in gpt's chain
    asyncio.run(f.load())
    t = app.tries.start_try({"api": "openai", "model": "gpt"}, "provider.ant", 2)
    assert t.provider_name == "ant" and t.upstream_model == "claude-x"
    with pytest.raises(GatewayError):
        app.tries.start_try({"api": "openai", "model": "gpt"}, "provider.nope", 2)


def test_a_store_outage_is_logged_once_per_outage(caplog) -> None:
    versions = Versions(CFG)
    state = {"down": True}

    async def loader(n: int) -> None:
        if state["down"]:
            raise ConnectionError("store down")

    versions.loader = loader

    async def polls(k: int) -> None:
        for _ in range(k):
            await versions.load()

    with caplog.at_level("INFO", "sidegate.live"):
        asyncio.run(polls(5))
        state["down"] = False
        asyncio.run(polls(2))
        state["down"] = True
        asyncio.run(polls(3))
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2 and caplog.text.count("answers again") == 1
