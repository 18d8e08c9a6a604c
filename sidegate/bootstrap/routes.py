"""The route table: one route per model chain start (matched on the route the gateway picked), the
lanes' second routes, the HTTP front's replays, and the routes that refuse a request from its head
alone (413, 415) or say why nothing can route it (503, 404)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sidegate.bootstrap.direct_lane import direct_errors_metadata, direct_response_headers, no_direct_errors
from sidegate.bootstrap.input import filters_off, unsupported_encoding_route
from sidegate.bootstrap.limits import duration, per_try_idle_timeout, service_timeout_s
from sidegate.config import ModelConfig, ProviderConfig, SidegateConfig
from sidegate.errors import Api, error_body
from sidegate.lanes import direct_apis
from sidegate.wire import (
    AUTHZ_NS,
    DIRECT,
    META_NS,
    REPLAY_ROUTE,
    ROUTE_HEADER,
    ROUTE_KEY,
    TRY,
    cluster_name,
    direct_cluster_name,
    pinned_route_value,
    route_value,
    try_cluster_name,
)

ROUTE_CONFIG = "sidegate"
"""The route configuration's name (RDS asks for it by this name)."""


def route_config(cfg: SidegateConfig, *, front_http: bool, sidegate_filters: bool) -> dict[str, Any]:
    """The connection manager's routes. `sidegate_filters=False` (the "Envoy alone" baseline): the
    first model's route as catch-all, without anything Sidegate's filters read."""
    routes = oversize_routes(cfg.listener.max_request_bytes)
    if front_http:
        routes += _replay_routes(cfg)
    routes += [r for name in cfg.models for r in _model_routes(cfg, name)]
    routes.append(unsupported_encoding_route())  # model routes match only once the gateway ran
    # An API path without a route header means the gateway filter did not run (it is down and
    # failure_mode_allow let the request through): nothing can route it, say so with a 503.
    for path in ("/v1/chat/completions", "/v1/messages", "/v1/responses"):
        routes.append({"name": f"gateway-unavailable{path}", "match": {"path": path},
                       "direct_response": {"status": 503, "body": {"inline_string": "the Sidegate gateway service is unavailable"}}})  # fmt: skip
    routes.append({"name": "unrouted", "match": {"prefix": "/"}, "direct_response": {"status": 404}})
    if not sidegate_filters:
        first = next(r for r in routes if r["name"].startswith("model."))
        routes = [{**{k: v for k, v in first.items() if k != "typed_per_filter_config"}, "match": {"prefix": "/"}}]
    return {
        "name": ROUTE_CONFIG,
        "virtual_hosts": [
            {
                "name": "sidegate",
                "domains": ["*"],
                "request_body_buffer_limit": cfg.listener.max_request_bytes,
                "routes": routes,
            }
        ],
    }


def _model_routes(cfg: SidegateConfig, model: str) -> list[dict[str, Any]]:
    """One Envoy route per possible start of the chain: the gateway skips ejected providers by
    picking a later start; Envoy retries the rest of the chain on 429/5xx/timeouts/resets.
    With the direct lane on, chains Envoy can serve alone get a second route (`...~direct`); with
    the HTTP front, every chain also gets a try-lane route (`...~try`)."""
    m = cfg.models[model]
    groups = m.groups()
    front_http, direct_lane = cfg.services.front == "http", cfg.services.direct_lane
    out = []
    for start in range(len(groups)):
        out.append(_model_route(model, m, groups, start, front_http=front_http, direct_lane=direct_lane))
        if direct_lane and direct_apis(cfg, model, start):
            out.append(_model_route(model, m, groups, start, lane=DIRECT, front_http=front_http, direct_lane=True,
                                    providers=cfg.providers))  # fmt: skip
        if front_http:
            out.append(_model_route(model, m, groups, start, lane=TRY, front_http=True, direct_lane=direct_lane))
    if m.pins:  # the gateway picks the first provider (a routing policy, an override): one chain per provider
        direct = direct_lane and bool(direct_apis(cfg, model, 0))  # a pinned chain holds every provider
        for r in m.routes:
            pinned = pinned_groups(groups, r.provider)
            for lane in ("", *([DIRECT] if direct else []), *([TRY] if front_http else [])):
                out.append(_model_route(model, m, pinned, 0, lane=lane, front_http=front_http,
                                        direct_lane=direct_lane, pin=r.provider, providers=cfg.providers))  # fmt: skip
    return out


def pinned_groups(groups: list[list[Any]], provider: str) -> list[list[Any]]:
    """The chain tried first on `provider`, then on the other routes in their configured priority
    groups (weights kept), so the fallbacks of a pinned request are the model's own."""
    first = [r for g in groups for r in g if r.provider == provider]
    rest = [[r for r in g if r.provider != provider] for g in groups]
    return [first, *(g for g in rest if g)]


def _model_route(
    model: str, m: ModelConfig, groups: list[list[Any]], start: int, *, lane: str = "", front_http: bool = False,
    direct_lane: bool = False, pin: str = "", providers: Mapping[str, ProviderConfig] | None = None,
) -> dict[str, Any]:
    """`direct_lane`: the direct lane's error filter exists (only the `~direct` routes keep it on).
    `pin`: the chain pinned to start on that provider (`groups` are then its pinned groups).
    `providers` (the direct lane's routes): what the error filter reads of its chain's providers."""
    name = {DIRECT: direct_cluster_name, TRY: try_cluster_name}.get(lane, cluster_name)
    direct = lane == DIRECT
    pgroups = [
        # (a weight-0 route is in no group but a pinned chain's first, alone: any share serves it)
        {"name": f"p{i}", "clusters": [{"cluster_name": name(r.provider), "weight": max(r.weight, 1)} for r in g]}
        for i, g in enumerate(groups[start:], start)
    ]
    value = (pinned_route_value(model, pin) if pin else route_value(model, start)) + lane
    extra: dict[str, Any] = {"response_headers_to_add": direct_response_headers(front_http)} if direct else {}
    if direct and providers is not None:
        extra["metadata"] = direct_errors_metadata(providers, dict.fromkeys(r.provider for g in groups[start:] for r in g))
    if direct_lane and not direct:
        extra["typed_per_filter_config"] = no_direct_errors()
    return {
            "name": f"model.{model}@{pin}{lane}" if pin else f"model.{model}.{start}{lane}",
            "match": {"prefix": "/", "headers": [{"name": ROUTE_HEADER, "string_match": {"exact": value}}],
                      "dynamic_metadata": [_route_metadata({"exact": value}, front_http)]},
            "request_headers_to_remove": [ROUTE_HEADER],
            **extra,
            "route": {
                **({"auto_host_rewrite": True} if direct else {}),
                "inline_cluster_specifier_plugin": {
                    "extension": {
                        "name": "envoy.router.cluster_specifier_plugin.priority_group",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.router.cluster_specifiers.priority_group.v3.PriorityGroupClusterSpecifier",
                            "priority_groups": pgroups,
                        },
                    }
                },
                "timeout": duration(m.timeout_s),
                "retry_policy": {
                    "retry_on": "connect-failure,reset,refused-stream,retriable-status-codes",
                    "retriable_status_codes": sorted(set(m.retry_on_status)),
                    "num_retries": len(pgroups) - 1,
                    "per_try_timeout": duration(m.per_try_timeout_s),
                    "per_try_idle_timeout": per_try_idle_timeout(m),
                    "refresh_cluster_on_retry": True,
                    "retry_back_off": {"base_interval": "0.001s", "max_interval": "0.002s"},
                },
            },
        }  # fmt: skip


OVERSIZE_ROUTE = "too-large"


def oversize_routes(limit: int) -> list[dict[str, Any]]:
    """Refuse a declared Content-Length over the limit up front: no filter runs, the body is never
    read (a body that outgrows Envoy's buffer while ext_authz is pending can otherwise stall). One
    route per API format, each with its own error body (Anthropic's paths first)."""
    msg = f"Request body too large: more than {limit} bytes (this gateway's listener.max_request_bytes)."
    return [
        _oversize_route(f"{OVERSIZE_ROUTE}.anthropic", "/v1/messages", limit, error_body(Api.ANTHROPIC, 413, msg)),
        _oversize_route(OVERSIZE_ROUTE, "/", limit, error_body(Api.OPENAI, 413, msg)),
    ]


def _oversize_route(name: str, prefix: str, limit: int, body: bytes) -> dict[str, Any]:
    return {
        "name": name,
        "match": {"prefix": prefix, "headers": [{"name": "content-length", "range_match": {"start": limit + 1, "end": 1 << 62}}]},
        "direct_response": {"status": 413, "body": {"inline_string": body.decode()}},
        "response_headers_to_add": [{"header": {"key": "content-type", "value": "application/json"},
                                     "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
        "typed_per_filter_config": filters_off(),
    }  # fmt: skip


def _route_metadata(match: dict[str, str], front_http: bool) -> dict[str, Any]:
    """The route value as the gateway set it, from the metadata it set with it (the HTTP front's
    answer header in ext_authz's namespace, or `route` in the gateway ext_proc's): a client's own
    `x-sidegate-route` matches no route without it, also when the gateway is down and
    `failure_mode_allow` lets the request through (it gets the gateway-unavailable 503 instead)."""
    ns, key = (AUTHZ_NS, ROUTE_HEADER) if front_http else (META_NS, ROUTE_KEY)
    return {"filter": ns, "path": [{"key": key}], "value": {"string_match": match}}


def _replay_routes(cfg: SidegateConfig) -> list[dict[str, Any]]:
    """HTTP front: an answer held by the worker that made it (a cache hit, a 5xx); fetched there
    under the key that ends the route value (`~replay.<worker>.<key>`: the route header stays)."""
    return [
        {"name": f"replay.{i}", "match": {"prefix": "/", "headers": [{"name": ROUTE_HEADER, "string_match": {"prefix": f"{REPLAY_ROUTE}.{i}."}}],
                                          "dynamic_metadata": [_route_metadata({"prefix": f"{REPLAY_ROUTE}.{i}."}, True)]},
         "route": {"cluster": f"sidegate_front.{i}", "timeout": duration(service_timeout_s(cfg))},
         **({"typed_per_filter_config": no_direct_errors()} if cfg.services.direct_lane else {})}
        for i in range(cfg.services.extproc_workers)
    ]  # fmt: skip
