"""Render the Envoy bootstrap from the Sidegate config (nothing about ports/providers is hard-coded).

Filter chain: ext_authz (tenant key) -> ext_proc "gateway" (parse, guard, quota, cache, route; once
per request) -> router, whose upstream filter chain runs ext_proc "upstream" once per try (translate
for that try's provider, inject its credential, translate and meter the response).
Each model is a route matched on the `x-sidegate-route` header that the gateway stage sets; its
provider chain is a priority_group cluster specifier so a retry goes to the next provider.

This module assembles the parts, each rendered by one module of this package:

- listener.py: the listener, its HTTP filter chain and router; replies.py: Envoy's own replies in
  the client's format; accesslog.py: the JSON access log and the gRPC one for the completion hooks;
- routes.py: the route table; clusters.py: the provider clusters and Sidegate's own services;
- direct_lane.py (with stream.py, the stream watch) and try_lane.py: each lane's clusters and filters;
- hygiene.py (header allow-lists), input.py (gzip, 415), buffers.py (answer sizes), limits.py
  (connections, timeouts): the limits the listener, routes and clusters apply;
- version.py: xDS mode (the xDS server's cluster, `dynamic_resources`, the config version header);
- jwt_authn.py: JWT callers (the jwt_authn filter, first in the chain, and the remote JWKS' clusters);
- tracing.py: Envoy's OpenTelemetry tracer and the collector's cluster (when tracing is on).

Every Lua program is a file in lua/ (`envoy_*.lua`), read through sidegate/lua.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from sidegate import trust
from sidegate.bootstrap import hygiene, jwt_authn, tracing, version
from sidegate.bootstrap.buffers import limit_extproc_buffers
from sidegate.bootstrap.clusters import LEAN_CLUSTER, address, front_clusters, grpc_cluster, provider_cluster
from sidegate.bootstrap.direct_lane import direct_cluster
from sidegate.bootstrap.limits import overload_manager, service_timeout_s
from sidegate.bootstrap.listener import listener
from sidegate.bootstrap.routes import route_config
from sidegate.bootstrap.try_lane import try_cluster
from sidegate.bootstrap.version import dynamic_resources, xds_cluster
from sidegate.config import SidegateConfig, local_address
from sidegate.lanes import direct_provider


@dataclass(frozen=True, slots=True)
class Resources:
    """What Envoy serves with: the one listener, its route configuration and the clusters. The
    static bootstrap holds them in `static_resources`; the xDS server (sidegate/xds/) sends them
    over ADS (listener: LDS, routes: RDS, clusters: CDS). One function renders both."""

    listener: dict[str, Any]
    route_config: dict[str, Any]
    clusters: list[dict[str, Any]]


def resources(cfg: SidegateConfig, *, sidegate_filters: bool = True, xds_version: int | None = None) -> Resources:
    """The listener, routes and clusters for `cfg`. `xds_version` (the routing document's version):
    rendered for the xDS server, the listener takes its routes over RDS and the routes set
    `x-sidegate-config-version` (sidegate/bootstrap/version.py); None: the static bootstrap's, the
    route configuration inline in the listener."""
    front_http = cfg.services.front == "http" and sidegate_filters
    direct = cfg.services.direct_lane and sidegate_filters
    routes = route_config(cfg, front_http=front_http, sidegate_filters=sidegate_filters)
    if xds_version and sidegate_filters:  # (0: no routing document in the store yet: no version to set)
        version.set_on_routes(routes, xds_version)
    lst = listener(cfg, front_http=front_http, direct=direct, sidegate_filters=sidegate_filters,
                   routes=None if xds_version is not None else routes)  # fmt: skip
    return Resources(lst, routes, _clusters(cfg, front_http=front_http, direct=direct, sidegate_filters=sidegate_filters))


def _base(cfg: SidegateConfig) -> dict[str, Any]:
    runtime = hygiene.runtime()
    runtime["layers"][0]["static_layer"].update(tracing.runtime_keys(cfg.observability.tracing))
    return {
        "node": trust.NODE,
        "admin": {"address": address(cfg.listener.admin_host, cfg.listener.admin_port)},
        "overload_manager": overload_manager(cfg.listener),
        "layered_runtime": runtime,
    }


def bootstrap(cfg: SidegateConfig, *, sidegate_filters: bool = True) -> dict[str, Any]:
    """The static Envoy bootstrap (everything inline). `sidegate_filters=False` renders the same
    listener and clusters with no Sidegate filters and the first model's route as catch-all: the
    "Envoy alone" benchmark baseline."""
    res = resources(cfg, sidegate_filters=sidegate_filters)
    return {**_base(cfg), "static_resources": {"listeners": [res.listener], "clusters": res.clusters}}


def xds_bootstrap(cfg: SidegateConfig) -> dict[str, Any]:
    """The bootstrap of xDS mode (`services.xds`): Envoy's own settings and the xDS server's
    cluster; the listener, routes and clusters come over ADS from `sidegate serve xds`."""
    return {**_base(cfg), "static_resources": {"clusters": [xds_cluster(cfg)]}, "dynamic_resources": dynamic_resources()}


def _clusters(cfg: SidegateConfig, *, front_http: bool, direct: bool, sidegate_filters: bool) -> list[dict[str, Any]]:
    svc = cfg.services
    clusters = [provider_cluster(name, p) for name, p in cfg.providers.items()]
    if direct:
        clusters += [direct_cluster(name, p, front_http) for name, p in cfg.providers.items() if direct_provider(p)]
    svc_host = local_address(svc.host)
    if sidegate_filters:  # (the baseline calls no Sidegate service: nor needs the token file)
        if svc.auth == "ext_authz":
            clusters.append(grpc_cluster("sidegate_authz", svc_host, svc.authz_port, svc.authz_workers, svc.internal_token_file))
        clusters.append(grpc_cluster("sidegate_extproc", svc_host, svc.extproc_port, svc.extproc_workers, svc.internal_token_file))
        limit_extproc_buffers(clusters[-1], cfg)
        if svc.grpc_server == "lean":  # the ext_proc streams' own server (extproc/lean.py)
            clusters.append(grpc_cluster(LEAN_CLUSTER, svc_host, svc.lean_port, svc.extproc_workers, svc.internal_token_file))
            limit_extproc_buffers(clusters[-1], cfg)
    if front_http:
        clusters += front_clusters(svc_host, svc)
        clusters += [try_cluster(name, p, service_timeout_s(cfg)) for name, p in cfg.providers.items()]
    if sidegate_filters:
        clusters += jwt_authn.jwks_clusters(cfg)
    if cfg.observability.tracing.enabled:
        clusters.append(tracing.otlp_cluster(cfg.observability.tracing))
    return clusters


def render_yaml(cfg: SidegateConfig, *, xds: bool = False) -> str:
    """The bootstrap as YAML: static (default), or xDS mode's (`xds`: Envoy gets the rest from
    `sidegate serve xds`)."""
    header = "# Rendered by `sidegate render` from the Sidegate config. Do not edit by hand.\n"
    return header + yaml.safe_dump(xds_bootstrap(cfg) if xds else bootstrap(cfg), sort_keys=False, width=120)
