"""Direct lane: which chains Envoy serves alone (render), which requests take it (lane stage), and
how an access-log entry becomes a Completion (extproc/direct.py)."""

from __future__ import annotations

import asyncio
import json

import yaml
from envoy.data.accesslog.v3 import accesslog_pb2

from extproc.direct import completion
from sidegate import config, lanes, wire
from sidegate.bootstrap import render
from sidegate.core.context import RequestContext
from sidegate.envoy_pb import struct
from sidegate.errors import Api
from sidegate.features.lane import LaneFeature

SECRET = "sk-live-abcdefghijklmnop"


def cfg(**services: object) -> config.SidegateConfig:
    """The gRPC front with ext_authz unless the test names its services."""
    return config.parse({
        "services": services if {"auth", "front"} & services.keys() else {"auth": "ext_authz", **services},
        "providers": {
            "openai": {"api": "openai", "base_url": "https://api.openai.com", "api_key_env": "OPENAI_API_KEY"},
            "groq": {"api": "openai", "base_url": "https://api.groq.com", "api_key_env": "GROQ_KEY",
                     "path_prefix": "/openai/v1"},
            "pool": {"api": "openai", "base_url": "http://10.0.0.1:8000",
                     "api_key_envs": [{"env": "K1"}, {"env": "K2"}]},
            "anthropic": {"api": "anthropic", "base_url": "https://api.anthropic.com", "api_key_env": "ANTHROPIC_API_KEY"},
        },
        "models": {
            "gpt-4o-mini": {"routes": [{"provider": "openai"}]},
            "alias": {"routes": [{"provider": "openai", "model": "gpt-4o"}]},
            "mixed": {"routes": [{"provider": "openai"}, {"provider": "anthropic"}]},
            "prefixed": {"routes": [{"provider": "groq"}]},
            "pooled": {"routes": [{"provider": "pool"}]},
            "claude": {"routes": [{"provider": "anthropic"}]},
            "tail": {"routes": [{"provider": "anthropic", "model": "x"}, {"provider": "openai"}]},
        },
    }, env={"OPENAI_API_KEY": SECRET})  # fmt: skip


def test_direct_chains():
    c = cfg()
    both = frozenset({Api.OPENAI, Api.RESPONSES})  # an OpenAI provider serves Responses by default
    assert lanes.direct_apis(c, "gpt-4o-mini", 0) == both
    assert lanes.direct_apis(c, "claude", 0) == {Api.ANTHROPIC}
    for model in ("alias", "mixed", "prefixed", "pooled"):
        assert lanes.direct_apis(c, model, 0) == frozenset(), model
    # From its second group on, the chain is direct (the breaker may start there).
    assert lanes.direct_apis(c, "tail", 0) == frozenset() and lanes.direct_apis(c, "tail", 1) == both


def test_bootstrap_has_direct_clusters_and_routes_without_secrets():
    boot = render.bootstrap(cfg())
    text = yaml.safe_dump(boot)
    assert SECRET not in text
    clusters = {c["name"]: c for c in boot["static_resources"]["clusters"]}
    assert {"provider.openai~direct", "provider.anthropic~direct"} <= set(clusters)
    assert "provider.groq~direct" not in clusters and "provider.pool~direct" not in clusters
    opts = clusters["provider.openai~direct"]["typed_extension_protocol_options"]
    filters = opts["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["http_filters"]
    muts = filters[0]["typed_config"]["mutations"]["request_mutations"]
    assert {"append": {"header": {"key": "authorization", "value": "Bearer %ENVIRONMENT(OPENAI_API_KEY)%"},
                       "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}} in muts  # fmt: skip
    assert {"remove": "x-api-key"} in muts
    amuts = clusters["provider.anthropic~direct"]["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["http_filters"][0]["typed_config"]["mutations"]["request_mutations"]
    assert any(m.get("append", {}).get("header", {}).get("key") == "x-api-key" for m in amuts)
    assert {"remove": "authorization"} in amuts
    routes = {r["name"] for r in boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
              ["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]}  # fmt: skip
    assert {"model.gpt-4o-mini.0~direct", "model.claude.0~direct", "model.tail.1~direct"} <= routes
    assert "model.alias.0~direct" not in routes and "model.tail.0~direct" not in routes
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    names = [f["name"] for f in hcm["http_filters"]]
    assert names.index("sidegate.gateway") < names.index("sidegate.direct_errors") < names.index("sidegate.usage")
    assert any(a["name"] == "envoy.access_loggers.http_grpc" for a in hcm["access_log"])


def test_error_bodies_in_envoy_are_the_per_try_stages():
    """The error filter's per-provider entries come with each `~direct` route (its metadata under
    the filter's name), for exactly the providers of that route's chain."""
    from sidegate.errors import format_error, provider_invalid_response, provider_refused_key

    hcm = render.bootstrap(cfg())["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    lua = next(f for f in hcm["http_filters"] if f["name"] == "sidegate.direct_errors")
    code = lua["typed_config"]["default_source_code"]["inline_string"]
    routes = {r["name"]: r for r in hcm["route_config"]["virtual_hosts"][0]["routes"]}
    for route, name, api in (("model.gpt-4o-mini.0~direct", "openai", Api.OPENAI), ("model.claude.0~direct", "anthropic", Api.ANTHROPIC)):
        entries = routes[route]["metadata"]["filter_metadata"]["sidegate.direct_errors"]
        assert set(entries) == {name}
        assert entries[name]["refused"] == format_error(api, provider_refused_key(name)).decode()
        assert entries[name]["invalid"] == format_error(api, provider_invalid_response(name)).decode()
        assert entries[name]["api"] == api.value
        assert format_error(api, provider_refused_key(name)).decode() not in code  # not in the listener
    assert routes["model.gpt-4o-mini.0~direct"]["metadata"]["filter_metadata"]["sidegate.direct_errors"]["openai"]["env"] == "OPENAI_API_KEY"
    assert set(routes["model.tail.1~direct"]["metadata"]["filter_metadata"]["sidegate.direct_errors"]) == {"openai"}
    two = config.parse({
        "providers": {"a": {"api": "openai", "base_url": "http://10.0.0.1:8000", "api_key_env": "A_KEY"},
                      "b": {"api": "openai", "base_url": "http://10.0.0.2:8000", "auth": "none"}},
        "models": {"m": {"routes": [{"provider": "a"}, {"provider": "b"}]}},
    }, env={"A_KEY": SECRET})  # fmt: skip
    vhost = render.resources(two).route_config["virtual_hosts"][0]
    chain = next(r for r in vhost["routes"] if r["name"] == "model.m.0~direct")["metadata"]["filter_metadata"]["sidegate.direct_errors"]
    assert set(chain) == {"a", "b"} and chain["a"]["env"] == "A_KEY" and "env" not in chain["b"]  # a retry may reach b
    assert all("metadata" not in r for n, r in routes.items() if not n.endswith("~direct"))
    text = yaml.safe_dump(hcm)
    assert SECRET not in text and "OPENAI_API_KEY" not in code and "groq" not in code
    assert "groq" not in yaml.safe_dump([r.get("metadata") for r in routes.values()])  # not in the direct lane


def test_only_direct_lane_routes_run_the_error_filter():
    """The other lanes' routes switch the router-level error Lua off (per route: the Lua filter
    reads it when it runs, after the gateway picked the route)."""
    for front in ("ext_proc", "http"):
        hcm = render.bootstrap(cfg(front=front, auth="inline"))["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        model_routes = [r for r in hcm["route_config"]["virtual_hosts"][0]["routes"] if r["name"].startswith(("model.", "replay."))]
        assert any(r["name"].endswith("~direct") for r in model_routes)
        for r in model_routes:
            off = r.get("typed_per_filter_config", {}).get("sidegate.direct_errors", {}).get("disabled")
            assert off is (None if r["name"].endswith("~direct") else True), r["name"]


def test_direct_lane_off_renders_no_direct_parts():
    text = yaml.safe_dump(render.bootstrap(cfg(direct_lane=False)))
    assert "~direct" not in text and "http_grpc" not in text and "json_to_metadata" not in text


def _ctx(model: str, api: Api = Api.OPENAI, **kw: object) -> RequestContext:
    ctx = RequestContext(path="/v1/chat/completions", method="POST", headers={}, api=api, model=model, route=model)
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def test_lane_stage_picks_direct_only_when_nothing_per_try_is_needed():
    stage = LaneFeature(cfg())
    ctx = _ctx("gpt-4o-mini")
    asyncio.run(stage.on_request(ctx))
    assert ctx.route == "gpt-4o-mini~direct" and ctx.meta["lane"] == "direct"
    cases = [
        _ctx("gpt-4o-mini", stream=True),  # an OpenAI stream without include_usage: injected per try
        _ctx("gpt-4o-mini", meta={"cache_fill": True}),  # the response is kept for the cache
        _ctx("gpt-4o-mini", meta={"restore": {"<PII_1>": "x"}}),  # PII restored in the response
        _ctx("gpt-4o-mini", api=Api.ANTHROPIC),  # translated
        _ctx("alias"),  # body rewritten per try
    ]
    for ctx in cases:
        asyncio.run(stage.on_request(ctx))
        assert "~direct" not in ctx.route and "lane" not in ctx.meta
    # Streams whose events carry the usage: the direct lane's stream watch reads it.
    usage_stream = _ctx("gpt-4o-mini", stream=True, client_wants_usage=True)
    asyncio.run(stage.on_request(usage_stream))
    assert usage_stream.route == "gpt-4o-mini~direct"
    front = LaneFeature(cfg(auth="inline", front="http"))
    redacted = _ctx("gpt-4o-mini", body_changed=True)  # the HTTP front cannot forward a new body
    asyncio.run(front.on_request(redacted))
    assert "~direct" not in redacted.route
    breaker_start = _ctx("tail", meta={"start": 1}, route="tail#1")
    asyncio.run(stage.on_request(breaker_start))
    assert breaker_start.route == "tail#1~direct"
    off = LaneFeature(cfg(direct_lane=False))
    ctx = _ctx("gpt-4o-mini")
    asyncio.run(off.on_request(ctx))
    assert ctx.route == "gpt-4o-mini"


def _entry(meta: dict, usage: dict | None, status: int = 200, cluster: str = "provider.openai~direct",
           headers: dict[str, str] | None = None) -> accesslog_pb2.HTTPAccessLogEntry:  # fmt: skip
    e = accesslog_pb2.HTTPAccessLogEntry()
    md = {wire.META_NS: meta, **({wire.USAGE_NS: usage} if usage is not None else {})}
    for ns, fields in md.items():
        e.common_properties.metadata.filter_metadata[ns].CopyFrom(struct(fields))
    e.common_properties.upstream_cluster = cluster
    e.common_properties.upstream_request_attempt_count = 2
    e.common_properties.time_to_last_downstream_tx_byte.FromMilliseconds(40)
    e.common_properties.time_to_first_upstream_rx_byte.FromMilliseconds(30)
    e.response.response_code.value = status
    for k, v in (headers or {}).items():
        e.response.response_headers[k] = v
    return e


def test_access_log_entry_to_completion():
    meta = {"lane": "direct", "model": "gpt-4o-mini", "tenant": "acme", "api": "openai"}
    c = completion(_entry(meta, {"prompt_tokens": 12.0, "completion_tokens": 3.0, "cached_tokens": 4.0, "model": "gpt-4o-mini-2024"}), now=100.0)
    assert c is not None
    assert (c.provider, c.status, c.attempt, c.final, c.streamed, c.aborted) == ("openai", 200, 2, True, False, False)
    assert (c.usage.input_tokens, c.usage.output_tokens, c.usage.cached_tokens) == (12, 3, 4)
    assert c.upstream_model == "gpt-4o-mini-2024" and c.meta["tenant"] == "acme"
    assert abs(c.ended_at - c.started_at - 0.040) < 1e-6 and abs(c.first_byte_at - c.started_at - 0.030) < 1e-6
    a = completion(_entry({**meta, "api": "anthropic"}, {"input_tokens": 5.0, "output_tokens": 7.0,
                                                         "cache_read_input_tokens": 10.0}, cluster="provider.anthropic~direct"))  # fmt: skip
    assert a is not None and a.provider == "anthropic"
    assert (a.usage.input_tokens, a.usage.output_tokens, a.usage.cached_tokens) == (15, 7, 10)
    err = completion(_entry(meta, None, status=429, headers={"retry-after": "3"}))
    assert err is not None and err.usage is None and err.retry_after_s == 3.0
    gone = completion(_entry(meta, None, status=0, cluster=""))
    assert gone is not None and gone.aborted and gone.provider == "none"
    assert completion(_entry({"model": "m"}, None)) is None  # full lane: its per-try stream observed it


def test_direct_stream_entries_from_either_front():
    meta = {"lane": "direct", "model": "gpt-4o-mini", "tenant": "acme", "api": "openai", "stream": True}
    # The HTTP front's metadata: a JSON header in ext_authz's namespace.
    e = _entry({}, {"prompt_tokens": 9.0, "completion_tokens": 4.0})
    del e.common_properties.metadata.filter_metadata[wire.META_NS]
    e.common_properties.metadata.filter_metadata[wire.AUTHZ_NS].CopyFrom(
        struct({wire.FRONT_META_HEADER: json.dumps(meta), wire.FRONT_LANE_HEADER: "direct"}))  # fmt: skip
    c = completion(e)
    assert c is not None and c.streamed and c.usage.output_tokens == 4 and c.meta["tenant"] == "acme"
    # Left mid-stream before the usage event: the streamed tokens are estimated from the bytes sent.
    cut = _entry(meta, None)
    cut.common_properties.response_flags.downstream_connection_termination = True
    cut.response.response_body_bytes = 1600
    c = completion(cut)
    assert c is not None and c.aborted and c.usage is None and c.chunks == 10


def test_direct_stream_watch_metadata_gives_ttft_and_settles_the_end_race():
    """The stream watch's `sidegate.stream` metadata (sidegate/bootstrap/stream.py): the first body
    chunk's time is the TTFT (from the final try's start); a relayed terminal event means the
    stream was not aborted even if the client hung up before Envoy saw the provider's end."""
    from sidegate.core.completion import ttft_seconds
    from sidegate.wire import STREAM_NS

    meta = {"lane": "direct", "model": "gpt-4o-mini", "tenant": "acme", "api": "openai", "stream": True}
    e = _entry(meta, {"prompt_tokens": 9.0, "completion_tokens": 4.0})
    e.common_properties.start_time.FromMilliseconds(1_000_000)
    e.common_properties.time_to_first_upstream_tx_byte.FromMilliseconds(5)
    e.common_properties.metadata.filter_metadata[STREAM_NS].CopyFrom(struct({"end": "complete", "first_us": "1000025000"}))
    e.common_properties.response_flags.downstream_connection_termination = True  # the race
    e.response.response_body_bytes = 900
    c = completion(e)
    assert c is not None and not c.aborted and c.chunks >= 1
    assert abs(ttft_seconds(c) - 0.020) < 1e-6  # 25 ms after the request, 5 ms of it before the try
    # A stream the watch ended (malformed or cut): a provider fault, not an abort; the streamed
    # tokens are estimated for the quota true-up when the usage event never came.
    e.common_properties.metadata.filter_metadata[STREAM_NS].CopyFrom(struct({"end": "cut", "first_us": "1000025000"}))
    e.common_properties.metadata.filter_metadata[wire.USAGE_NS].Clear()
    c = completion(e)
    assert c is not None and not c.aborted and c.usage is None and c.chunks == 900 // 160
    # No terminal event relayed and the client left: an abort, as before.
    del e.common_properties.metadata.filter_metadata[STREAM_NS]
    c = completion(e)
    assert c is not None and c.aborted
    # The provider reset mid-body (HTTP/1.1: Envoy flags a protocol error): an abort too.
    e.common_properties.response_flags.downstream_connection_termination = False
    e.common_properties.response_flags.upstream_protocol_error = True
    c = completion(e)
    assert c is not None and c.aborted
