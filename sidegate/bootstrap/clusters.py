"""Envoy's clusters: one per provider (the full lane's, the one the router's per-try ext_proc
serves), Sidegate's own services (the authz and ext_proc gRPC services, the HTTP front's workers),
and the pieces the lanes' provider clusters are built from (sidegate/bootstrap/direct_lane.py,
try_lane.py)."""

from __future__ import annotations

from typing import Any

from sidegate import trust
from sidegate.bootstrap.limits import duration
from sidegate.config import ProviderConfig
from sidegate.wire import META_NS, cluster_name

SYSTEM_CA = "/etc/ssl/certs/ca-certificates.crt"

UPSTREAM_CODEC = {
    "name": "envoy.filters.http.upstream_codec",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"},
}
"""The last upstream HTTP filter of every chain (the router's, or a cluster's own)."""


def _local_cluster(name: str, host: str, ports: range, *, http2: bool, token_file: str) -> dict[str, Any]:
    """A Sidegate service's endpoints (one per worker port). Its own upstream filter chain (which
    replaces the router's: no per-try ext_proc on requests to it) sets the internal token on every
    request (sidegate/trust.py)."""
    opts: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}} if http2 else {"http_protocol_options": {}},
        "http_filters": [trust.injector(token_file), UPSTREAM_CODEC],
    }
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": opts},
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address(host, p)}} for p in ports]}],
        },
    }
    if len(ports) > 1:
        # Least requests in flight over every worker (choice_count: all of them, not two at random),
        # not round robin: the workers' loads differ by more than their share of the requests (the
        # worker holding an Envoy thread's access-log stream settles every direct-lane request of
        # that thread: +60 % CPU per request measured with two workers), and round robin would hand
        # the busiest one as many new requests as the idle one.
        cluster["lb_policy"] = "LEAST_REQUEST"
        cluster["least_request_lb_config"] = {"choice_count": len(ports)}
    return cluster


def grpc_cluster(name: str, host: str, port: int, workers: int, token_file: str) -> dict[str, Any]:
    """A Sidegate gRPC service (authz, ext_proc): one endpoint per worker port."""
    return _local_cluster(name, host, range(port, port + workers), http2=True, token_file=token_file)


LEAN_CLUSTER = "sidegate_extproc_lean"
"""The ext_proc streams' cluster with `services.grpc_server: lean` (the access log stays on
`sidegate_extproc`, grpc.aio's)."""


def extproc_cluster(cfg: Any) -> str:
    """The cluster both ext_proc filters call."""
    return LEAN_CLUSTER if cfg.services.grpc_server == "lean" else "sidegate_extproc"


def address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def provider_cluster(name: str, p: ProviderConfig) -> dict[str, Any]:
    """The provider's cluster of the full lane (the router's per-try ext_proc prepares each try)."""
    cname = cluster_name(name)
    http_opts: dict[str, Any]
    if p.tls:
        http_opts = {"auto_config": {"http_protocol_options": {}, "http2_protocol_options": {}}}
    else:
        http_opts = {"explicit_http_config": {"http_protocol_options": {}}}
    cluster: dict[str, Any] = {
        "name": cname,
        "type": "STRICT_DNS",
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": duration(p.connect_timeout_s),
        "metadata": {"filter_metadata": {META_NS: {"provider": name}}},
        "circuit_breakers": {"thresholds": [{"max_connections": p.max_connections, "max_requests": p.max_connections}]},
        # A provider hostname usually resolves to several addresses: eject the ones that keep failing.
        # (Whole-provider ejection for fallback chains is the gateway's breaker: sidegate/features/route/breaker.py.)
        "outlier_detection": {
            "consecutive_5xx": 5, "consecutive_gateway_failure": 5, "interval": "10s",
            "base_ejection_time": "30s", "max_ejection_percent": 50,
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                **http_opts,
            }
        },
        "load_assignment": {
            "cluster_name": cname,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address(p.host, p.port)}}]}],
        },
    }
    if p.tls:
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": p.host,
                "common_tls_context": {
                    "alpn_protocols": ["h2", "http/1.1"],
                    "validation_context": {
                        "trusted_ca": {"filename": SYSTEM_CA},
                        "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": p.host}}],
                    },
                },
            },
        }
    return cluster


def lane_cluster(name: str, p: ProviderConfig, cname: str) -> dict[str, Any]:
    """The provider's cluster under another name (a lane's: its own upstream filters follow)."""
    cluster = provider_cluster(name, p)
    cluster["name"] = cname
    cluster["load_assignment"]["cluster_name"] = cname
    return cluster


def set_upstream_filters(cluster: dict[str, Any], *http_filters: dict[str, Any]) -> None:
    """The cluster's own upstream filter chain (it replaces the router's)."""
    opts = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    opts["http_filters"] = [*http_filters, UPSTREAM_CODEC]


def front_clusters(host: str, svc: Any) -> list[dict[str, Any]]:
    """The front's workers (HTTP/1.1, kept alive) and one cluster per worker for replays (those
    skip the per-try ext_proc)."""
    base, n = svc.front_port, svc.extproc_workers
    tf = svc.internal_token_file
    return [_local_cluster("sidegate_front", host, range(base, base + n), http2=False, token_file=tf)] + [
        _local_cluster(f"sidegate_front.{i}", host, range(base + i, base + i + 1), http2=False, token_file=tf)
        for i in range(n)
    ]
