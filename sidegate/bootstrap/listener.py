"""The listener and its HTTP connection manager: the filter chain (decompressor and the inflated body's limit, ext_authz, the
gateway ext_proc or the HTTP front, the answer-size buffer, the direct lane's filters, the router
with the per-try ext_proc upstream), its access logs, routes (sidegate/bootstrap/routes.py) and
Envoy's own replies (sidegate/bootstrap/replies.py)."""

from __future__ import annotations

from typing import Any

from sidegate.bootstrap import direct_lane, jwt_authn, version
from sidegate.bootstrap.accesslog import access_log, direct_access_log, front_format
from sidegate.bootstrap.buffers import answer_limit_filter, listener_buffer_limit, whole_answer_filter
from sidegate.bootstrap.clusters import UPSTREAM_CODEC, address, extproc_cluster
from sidegate.bootstrap.input import inflated_limit_filter, request_decompressor
from sidegate.bootstrap.limits import duration, hcm_timeouts, service_timeout_s
from sidegate.bootstrap.replies import local_reply_config
from sidegate.bootstrap.routes import ROUTE_CONFIG
from sidegate.bootstrap.tracing import hcm_tracing
from sidegate.config import SidegateConfig
from sidegate.wire import (
    AUTHZ_NS,
    CHECK_PREFIX,
    CREDENTIAL_HEADERS,
    FRONT_FILTER,
    FRONT_SOURCE_HEADER,
    GATEWAY_FILTER,
    JWT_HEADER,
    JWT_NS,
    META_NS,
    PHASE_HEADER,
    ROUTE_HEADER,
)


def _front_filter(cfg: SidegateConfig) -> dict[str, Any]:
    """HTTP front: Envoy's ext_authz HTTP client posts the buffered request to extproc's front."""
    svc = cfg.services
    jwt = jwt_authn.enabled(cfg)
    return {
        "name": FRONT_FILTER,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "transport_api_version": "V3",
            "failure_mode_allow": svc.failure_mode_allow,
            "status_on_error": {"code": 503},
            "clear_route_cache": True,
            # Over the limit: ext_authz's own 413 (in the client's format: local_reply_config), before
            # the front reads a byte; it lowers the stream's limit to this, sidegate.answer_limit raises it.
            "with_request_body": {"max_request_bytes": cfg.listener.max_request_bytes, "allow_partial_message": False},
            # What the features read (credentials, request id, Anthropic versions, cache directives, the
            # client's trace context: Envoy replaces it with its own span's when it traces) and the
            # client's internal headers (so the answer can drop them); nothing else is copied.
            "allowed_headers": {"patterns": [
                *({"exact": h} for h in (*CREDENTIAL_HEADERS, "x-request-id", "anthropic-version", "anthropic-beta", "cache-control",
                                         "traceparent")),
                {"prefix": "x-sidegate-"}]},
            # (the jwt_authn namespace header is Envoy's own, added below: never the client's)
            **({"disallowed_headers": {"patterns": [{"exact": JWT_HEADER}]}} if jwt else {}),
            "http_service": {
                "server_uri": {"uri": f"http://sidegate-front{CHECK_PREFIX}", "cluster": "sidegate_front",
                               "timeout": duration(service_timeout_s(cfg))},
                "path_prefix": CHECK_PREFIX,
                "authorization_request": {"headers_to_add": [
                    {"key": FRONT_SOURCE_HEADER, "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"},
                    *(jwt_authn.front_request_headers() if jwt else [])]},
                "authorization_response": {
                    "allowed_upstream_headers": {"patterns": [{"exact": ROUTE_HEADER}]},
                    "allowed_client_headers": {"patterns": [
                        {"exact": "content-type"}, {"exact": "retry-after"}, {"prefix": "x-ratelimit-"},
                        {"prefix": "x-sidegate-"}]},
                    "allowed_client_headers_on_success": {"patterns": [
                        {"prefix": "x-ratelimit-"}, {"exact": "x-sidegate-guard"}]},
                    # x-sidegate-meta/-lane/-api and the access log's fields (tenant, model...)
                    "dynamic_metadata_from_headers": {"patterns": [{"prefix": "x-sidegate-"}]},
                },
            },
        },
    }  # fmt: skip


def _ext_proc(cluster: str, phase: str, timeout_s: float, mode: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
        "grpc_service": {
            "envoy_grpc": {"cluster_name": cluster},
            "timeout": duration(timeout_s),
            "initial_metadata": [{"key": PHASE_HEADER, "value": phase}],
        },
        "processing_mode": mode,
        "message_timeout": duration(timeout_s),
        **extra,
    }


def _gateway_filter(cfg: SidegateConfig) -> dict[str, Any]:
    """The ext_proc front: the features' request hooks once per request, before the router."""
    svc = cfg.services
    inline_jwt = svc.auth == "inline" and jwt_authn.enabled(cfg)
    proc = _ext_proc(
        extproc_cluster(cfg),
        "gateway",
        service_timeout_s(cfg),
        {"request_header_mode": "SEND", "request_body_mode": "BUFFERED",
         "response_header_mode": "SKIP", "response_body_mode": "NONE",
         "request_trailer_mode": "SKIP", "response_trailer_mode": "SKIP"},
        failure_mode_allow=svc.failure_mode_allow,
        status_on_error={"code": 503},
        stat_prefix="gateway",
        **({"request_attributes": ["source.address"]} if svc.auth == "inline" else {}),
        metadata_options={
            # inline auth with JWT callers: the jwt_authn filter's findings too
            "forwarding_namespaces": {"untyped": [AUTHZ_NS, *([JWT_NS] if inline_jwt else [])]},
            "receiving_namespaces": {"untyped": [META_NS]},
        },
    )  # fmt: skip
    return {"name": GATEWAY_FILTER, "typed_config": proc}


def _upstream_filter(cfg: SidegateConfig) -> dict[str, Any]:
    """The per-try stage: an upstream filter of the router, one ext_proc stream per try."""
    proc = _ext_proc(
        extproc_cluster(cfg),
        "upstream",
        service_timeout_s(cfg),
        # Request headers must be SEND: with SKIP the upstream codec sends them before the body
        # response could mutate them (verified on 1.40). A provider stream switches to
        # FULL_DUPLEX_STREAMED (+ trailers SEND) in the response-headers answer's mode_override
        # (extproc/server.py; accepted per response on 1.40): buffered answers keep BUFFERED.
        {"request_header_mode": "SEND", "request_body_mode": "BUFFERED",
         "response_header_mode": "SEND", "response_body_mode": "STREAMED",
         "request_trailer_mode": "SKIP", "response_trailer_mode": "SKIP"},
        failure_mode_allow=False,
        status_on_error={"code": 503},
        stat_prefix="upstream",
        allow_mode_override=True,
        request_attributes=["xds.cluster_name", "upstream.request_attempt_count"],
        mutation_rules={"allow_all_routing": True},
        metadata_options={
            "forwarding_namespaces": {"untyped": [META_NS, AUTHZ_NS]},
            # AUTHZ_NS: a stream's prepared body is blanked once used (extproc/prepared.py)
            "receiving_namespaces": {"untyped": [META_NS, AUTHZ_NS]},
        },
    )  # fmt: skip
    return {"name": "sidegate.upstream", "typed_config": proc}


def _ext_authz(cfg: SidegateConfig) -> dict[str, Any]:
    """The tenant key (or JWT) checked by the authz service (`services.auth: ext_authz`)."""
    svc = cfg.services
    return {
        "name": AUTHZ_NS,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "grpc_service": {"envoy_grpc": {"cluster_name": "sidegate_authz"}, "timeout": duration(svc.grpc_timeout_s)},
            "transport_api_version": "V3",
            "failure_mode_allow": svc.failure_mode_allow,
            "status_on_error": {"code": 503},
            **({"metadata_context_namespaces": [JWT_NS]} if jwt_authn.enabled(cfg) else {}),
        },
    }


def _router(cfg: SidegateConfig) -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.router",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
            # No x-envoy-* headers of the router's to providers (x-envoy-original-host: the
            # client's Host) or clients (x-envoy-upstream-service-time).
            "suppress_envoy_headers": True,
            # The full lane: the per-try stage applies the header allow-lists itself
            # (sidegate/core/tries.py; no regex here, so mesh sidecars need no RE2 runtime limit).
            "upstream_http_filters": [_upstream_filter(cfg), whole_answer_filter(), UPSTREAM_CODEC],
        },
    }


def http_connection_manager(
    cfg: SidegateConfig, *, front_http: bool, direct: bool, sidegate_filters: bool, routes: dict[str, Any] | None = None
) -> dict[str, Any]:
    """`front_http`: the HTTP front instead of the gateway ext_proc; `direct`: the direct lane's
    filters; `sidegate_filters=False`: the router alone (the "Envoy alone" baseline); `routes`:
    the route configuration inline (the static bootstrap), None: over RDS (xDS mode)."""
    svc = cfg.services
    fields = front_format() if front_http else None
    logs = access_log(cfg.observability.access_log, fields) if cfg.observability.access_log else []
    if direct or front_http:
        logs.append(direct_access_log(svc))
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "sidegate",
        **({"access_log": logs} if logs else {}),
        "codec_type": "AUTO",
        "generate_request_id": True,
        **({"tracing": hcm_tracing(cfg.observability.tracing)} if cfg.observability.tracing.enabled else {}),
        **hcm_timeouts(cfg.listener),
        "request_timeout": duration(cfg.listener.request_timeout_s),
        "request_headers_timeout": "10s",
        "local_reply_config": local_reply_config(),
        **({"route_config": routes} if routes is not None else {"rds": version.rds(ROUTE_CONFIG)}),
        "http_filters": [
            version.version_filter(),
            *([jwt_authn.jwt_filter(cfg)] if jwt_authn.enabled(cfg) else []),
            request_decompressor(),
            inflated_limit_filter(cfg),
            *([_ext_authz(cfg)] if svc.auth == "ext_authz" else []),
            _front_filter(cfg) if front_http else _gateway_filter(cfg),
            answer_limit_filter(cfg),
            *(direct_lane.router_filters() if direct else []),
            _router(cfg),
        ],
    }  # fmt: skip
    if not sidegate_filters:
        hcm["http_filters"] = [
            {"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
        ]
    return hcm


def listener(
    cfg: SidegateConfig, *, front_http: bool, direct: bool, sidegate_filters: bool, routes: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The one listener (the arguments: see :func:`http_connection_manager`)."""
    hcm = http_connection_manager(cfg, front_http=front_http, direct=direct, sidegate_filters=sidegate_filters, routes=routes)
    return {
        "name": "sidegate",
        "address": address(cfg.listener.host, cfg.listener.port),
        "per_connection_buffer_limit_bytes": listener_buffer_limit(cfg),
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    }
