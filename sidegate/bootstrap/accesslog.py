"""Envoy's access logs: the JSON one for operators (one line per client request), and the gRPC one
that hands finished direct-lane requests to the completion hooks in extproc (:func:`direct_access_log`).

Identity in the JSON log comes from dynamic metadata (never from request headers, and no header
that carries a key is ever logged): tenant and key id from ext_authz's namespace, model and cache
result from the gateway ext_proc's ``sidegate`` namespace, the serving provider from the response
header the upstream stage sets. Use :func:`access_log` as the ``access_log`` list of the HTTP connection manager.
"""

from __future__ import annotations

import functools
from typing import Any

from sidegate.bootstrap.limits import duration
from sidegate.wire import AUTHZ_NS, FRONT_LANE_HEADER, LANE_DIRECT, LANE_TRY, META_NS, TRY_NS, TryWire

STDOUT = ("", "-", "stdout")

FORMAT: dict[str, str] = {
    "ts": "%START_TIME(%Y-%m-%dT%H:%M:%S.%3fZ)%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ_WITHOUT_QUERY(:PATH)%",
    "protocol": "%PROTOCOL%",
    "status": "%RESPONSE_CODE%",
    "status_details": "%RESPONSE_CODE_DETAILS%",
    "response_flags": "%RESPONSE_FLAGS%",
    "duration_ms": "%DURATION%",
    "upstream_ttfb_ms": "%RESPONSE_DURATION%",
    "bytes_in": "%BYTES_RECEIVED%",
    "bytes_out": "%BYTES_SENT%",
    "tenant": f"%DYNAMIC_METADATA({AUTHZ_NS}:tenant)%",
    "key_id": f"%DYNAMIC_METADATA({AUTHZ_NS}:key_id)%",
    "team": f"%DYNAMIC_METADATA({AUTHZ_NS}:team)%",
    "user": f"%DYNAMIC_METADATA({AUTHZ_NS}:user)%",
    "model": f"%DYNAMIC_METADATA({META_NS}:model)%",
    "stream": f"%DYNAMIC_METADATA({META_NS}:stream)%",
    "cache": f"%DYNAMIC_METADATA({META_NS}:cache)%",
    "policy": f"%DYNAMIC_METADATA({META_NS}:policy)%",
    "reason": f"%DYNAMIC_METADATA({META_NS}:reason)%",
    "provider": "%RESP(X-SIDEGATE-PROVIDER)%",
    "attempts": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
    "upstream_cluster": "%UPSTREAM_CLUSTER%",
    "upstream_host": "%UPSTREAM_HOST%",
    "upstream_failure": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
    "route": "%ROUTE_NAME%",
    "user_agent": "%REQ(USER-AGENT)%",
}
"""Field -> Envoy command operator. Keep credential headers (authorization, x-api-key, api-key,
cookies) out of here: tests/unit/test_observe_accesslog.py enforces it."""


def front_format() -> dict[str, str]:
    """FORMAT for the HTTP front (`services.front: http`): the identity and the gateway's fields come
    from the front's answer headers, which Envoy keeps as metadata of ext_authz's namespace."""
    out = dict(FORMAT)
    for field in ("tenant", "key_id", "team", "user", "model", "stream", "cache", "policy", "reason"):
        out[field] = f"%DYNAMIC_METADATA({AUTHZ_NS}:x-sidegate-{field.replace('_', '-')})%"
    return out

FORBIDDEN_HEADERS = (
    "authorization",
    "x-api-key",
    "api-key",
    "cookie",
    "proxy-authorization",
    "anthropic-api-key",
)


def access_log(path: str | None = None, fields: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The HCM ``access_log`` list: JSON lines to ``path``, or to stdout when ``path`` is None/"-"."""
    log_format = {
        "json_format": dict(fields or FORMAT),
        "json_format_options": {"sort_properties": False},
        "formatters": [{
            "name": "envoy.formatter.req_without_query",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.formatter.req_without_query.v3.ReqWithoutQuery"},
        }],
    }  # fmt: skip
    if path is None or path in STDOUT:
        return [{
            "name": "envoy.access_loggers.stdout",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
                "log_format": log_format,
            },
        }]  # fmt: skip
    return [{
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": path,
            "log_format": log_format,
        },
    }]  # fmt: skip


def add_to_bootstrap(bootstrap: dict[str, Any], path: str | None = None) -> dict[str, Any]:
    """Attach the access log to every HTTP connection manager of a rendered bootstrap (in place)."""
    for listener in bootstrap.get("static_resources", {}).get("listeners", []):
        for chain in listener.get("filter_chains", []):
            for flt in chain.get("filters", []):
                if flt.get("name") == "envoy.filters.network.http_connection_manager":
                    flt["typed_config"]["access_log"] = access_log(path)
    return bootstrap


def _md_filter(ns: str, key: str, value: dict[str, Any], *, if_missing: bool = False) -> dict[str, Any]:
    """An access-log filter on one dynamic metadata value (`if_missing`: its result when the key is
    absent). Envoy's MetadataFilter ignores the matcher's `invert` (verified on 1.40)."""
    matcher = {"filter": ns, "path": [{"key": key}], "value": value}
    return {"metadata_filter": {"matcher": matcher, "match_if_key_not_found": if_missing}}


def direct_log_filter(svc: Any) -> dict[str, Any]:
    """Which finished requests the observe stage needs: direct-lane ones; with the HTTP front also
    try-lane requests whose last try has no response yet (`done` false), or for which the front
    prepared a try that never reached the Lua (no try state, but a try key from the front).
    Native metadata filters, not CEL: a CEL expression cost Envoy ~50 µs on every request."""
    if svc.front != "http":
        return _md_filter(META_NS, "lane", {"present_match": True})
    lane = functools.partial(_md_filter, AUTHZ_NS, FRONT_LANE_HEADER)
    # no try state: the Lua never ran (its first act sets `tries`, a number: never null)
    no_try_state = _md_filter(TRY_NS, "tries", {"null_match": {}}, if_missing=True)
    pending = {"or_filter": {"filters": [
        _md_filter(TRY_NS, "done", {"bool_match": False}),
        {"and_filter": {"filters": [no_try_state, _md_filter(AUTHZ_NS, TryWire.KEY, {"present_match": True})]}},
    ]}}  # fmt: skip
    return {"or_filter": {"filters": [
        lane({"string_match": {"exact": LANE_DIRECT}}),
        {"and_filter": {"filters": [lane({"string_match": {"exact": LANE_TRY}}), pending]}},
    ]}}  # fmt: skip


def direct_access_log(svc: Any) -> dict[str, Any]:
    """Finished direct-lane requests, batched to extproc's AccessLogService (the observe stage);
    with the HTTP front also try-lane requests whose last try never got its response (aborted)."""
    return {
        "name": "envoy.access_loggers.http_grpc",
        "filter": direct_log_filter(svc),
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig",
            "additional_response_headers_to_log": ["retry-after", "retry-after-ms"],
            "common_config": {
                "log_name": "sidegate.direct",
                "transport_api_version": "V3",
                "buffer_flush_interval": "0.05s",
                "buffer_size_bytes": 65536,
                "grpc_service": {"envoy_grpc": {"cluster_name": "sidegate_extproc"}, "timeout": duration(svc.grpc_timeout_s)},
            },
        },
    }  # fmt: skip
