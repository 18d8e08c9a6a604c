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
- tracing.py: Envoy's OpenTelemetry tracer and the collector's cluster (when tracing is on).

Every Lua program is a file in lua/ (`envoy_*.lua`), read through sidegate/lua.py.
"""

from __future__ import annotations

from typing import Any

import yaml

from sidegate import trust
from sidegate.bootstrap import hygiene, tracing
from sidegate.bootstrap.buffers import limit_extproc_buffers
from sidegate.bootstrap.clusters import address, front_clusters, grpc_cluster, provider_cluster
from sidegate.bootstrap.direct_lane import direct_cluster
from sidegate.bootstrap.limits import overload_manager, service_timeout_s
from sidegate.bootstrap.listener import listener
from sidegate.bootstrap.try_lane import try_cluster
from sidegate.config import SidegateConfig, local_address
from sidegate.lanes import direct_provider


def bootstrap(cfg: SidegateConfig, *, sidegate_filters: bool = True) -> dict[str, Any]:
    """The Envoy bootstrap. `sidegate_filters=False` renders the same listener and clusters with no
    Sidegate filters and the first model's route as catch-all: the "Envoy alone" benchmark baseline."""
    front_http = cfg.services.front == "http" and sidegate_filters
    direct = cfg.services.direct_lane and sidegate_filters
    runtime = hygiene.runtime()
    runtime["layers"][0]["static_layer"].update(tracing.runtime_keys(cfg.observability.tracing))
    return {
        "node": trust.NODE,
        "admin": {"address": address(cfg.listener.admin_host, cfg.listener.admin_port)},
        "overload_manager": overload_manager(cfg.listener),
        "layered_runtime": runtime,
        "static_resources": {
            "listeners": [listener(cfg, front_http=front_http, direct=direct, sidegate_filters=sidegate_filters)],
            "clusters": _clusters(cfg, front_http=front_http, direct=direct, sidegate_filters=sidegate_filters),
        },
    }


def _clusters(cfg: SidegateConfig, *, front_http: bool, direct: bool, sidegate_filters: bool) -> list[dict[str, Any]]:
    svc = cfg.services
    clusters = [provider_cluster(name, p) for name, p in cfg.providers.items()]
    if direct:
        clusters += [direct_cluster(name, p, front_http) for name, p in cfg.providers.items() if direct_provider(p)]
    svc_host = local_address(svc.host)
    if sidegate_filters:  # (the baseline calls no Sidegate service: nor needs the token file)
        clusters.append(grpc_cluster("sidegate_authz", svc_host, svc.authz_port, svc.authz_workers, svc.internal_token_file))
        clusters.append(grpc_cluster("sidegate_extproc", svc_host, svc.extproc_port, svc.extproc_workers, svc.internal_token_file))
        limit_extproc_buffers(clusters[-1], cfg)
    if front_http:
        clusters += front_clusters(svc_host, svc)
        clusters += [try_cluster(name, p, service_timeout_s(cfg)) for name, p in cfg.providers.items()]
    if cfg.observability.tracing.enabled:
        clusters.append(tracing.otlp_cluster(cfg.observability.tracing))
    return clusters


def render_yaml(cfg: SidegateConfig) -> str:
    header = "# Rendered by `sidegate render` from the Sidegate config. Do not edit by hand.\n"
    return header + yaml.safe_dump(bootstrap(cfg), sort_keys=False, width=120)
