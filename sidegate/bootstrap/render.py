"""Render the Envoy bootstrap from the Sidegate config (nothing about ports/providers is hard-coded).

Filter chain: ext_authz (tenant key) -> ext_proc "gateway" (parse, guard, quota, cache, route; once
per request) -> router, whose upstream filter chain runs ext_proc "upstream" once per try (translate
for that try's provider, inject its credential, translate and meter the response).
Each model is a route matched on the `x-sidegate-route` header that the gateway stage sets; its
provider chain is a priority_group cluster specifier so a retry goes to the next provider.
"""

from __future__ import annotations

import functools
import string
from typing import Any

import yaml

from sidegate import lua, trust
from sidegate.bootstrap import hygiene
from sidegate.bootstrap import limits as render_limits
from sidegate.bootstrap.buffers import (
    TOO_LARGE_DETAILS,
    answer_limit_filter,
    limit_extproc_buffers,
    listener_buffer_limit,
    too_large_bodies,
    whole_answer_filter,
)
from sidegate.bootstrap.input import (
    LOCAL_REPLY_CASES,
    filters_off,
    request_decompressor,
    unsupported_encoding_route,
)
from sidegate.bootstrap.limits import duration
from sidegate.bootstrap.stream import lua_events, stream_watch
from sidegate.config import ModelConfig, ProviderConfig, SidegateConfig, local_address
from sidegate.credentials.env import env_credential
from sidegate.errors import Api, format_error, provider_invalid_response, provider_refused_key
from sidegate.lanes import direct_chain, direct_provider
from sidegate.wire import (
    AUTHZ_NS,
    CHECK_PREFIX,
    CREDENTIAL_HEADERS,
    DIRECT,
    FRONT_API_HEADER,
    FRONT_FILTER,
    FRONT_LANE_HEADER,
    FRONT_META_HEADER,
    FRONT_SOURCE_HEADER,
    META_NS,
    PHASE_HEADER,
    PROVIDER_HEADERS,
    RATE_LIMIT_HEADERS,
    REPLAY_ROUTE,
    REPLY_DETAILS,
    ROUTE_HEADER,
    ROUTE_KEY,
    TRY,
    TRY_NS,
    TRY_PREFIX,
    USAGE_NS,
    TryWire,
    cluster_name,
    direct_cluster_name,
    route_value,
    try_cluster_name,
)

SYSTEM_CA = "/etc/ssl/certs/ca-certificates.crt"

# -- direct lane -------------------------------------------------------------------------------
# A try whose provider takes the client's request as is (same API, same model name, one key from
# an environment variable, no path rewrite) needs no Python per try: its cluster injects the
# credential itself (upstream header_mutation reading the key from Envoy's environment), Envoy's
# json_to_metadata reads the usage from the response, and the access log (gRPC ALS, batched)
# hands the finished request to the observers (quota true-up, ledger, metrics, breaker).
DIRECT_ERRORS_FILTER = "sidegate.direct_errors"


def _no_direct_errors() -> dict[str, Any]:
    """Per-route config of the routes whose answers are not the direct lane's: the error Lua is
    switched off there (it would return at once; its coroutine costs ~50 µs). Unlike
    `FilterConfig.disabled` (settled from the route cached when the filter chain is built, which
    is before the gateway picks the route), the Lua filter reads its per-route config when it
    runs, so the route the gateway picked counts (verified on 1.40)."""
    return {DIRECT_ERRORS_FILTER: {"@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute", "disabled": True}}


JSON_CONTENT_TYPES = (
    "application/json", "application/json; charset=utf-8", "application/json; charset=UTF-8",
    "application/json;charset=utf-8", "application/json;charset=UTF-8",
)  # fmt: skip
"""The JSON content types whose usage the direct lane reads. json_to_metadata compares the whole
header value, and flags any other type as unparseable (verified on 1.40): before this list, a 200
in `application/json; charset=utf-8`, as Express- or gin-based OpenAI-compatible servers send it,
became the direct lane's 502 "invalid response". Other spellings of a JSON type are relayed as
they are (the error Lua checks), their usage unread."""
_USAGE_FIELDS = (  # (json path, metadata key): OpenAI and Anthropic bodies
    (("usage", "prompt_tokens"), "prompt_tokens"),
    (("usage", "completion_tokens"), "completion_tokens"),
    (("usage", "prompt_tokens_details", "cached_tokens"), "cached_tokens"),
    (("usage", "input_tokens"), "input_tokens"),
    (("usage", "output_tokens"), "output_tokens"),
    (("usage", "cache_read_input_tokens"), "cache_read_input_tokens"),
    (("usage", "cache_creation_input_tokens"), "cache_creation_input_tokens"),
    (("model",), "model"),
)


_UPSTREAM_CODEC = {
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
        "http_filters": [trust.injector(token_file), _UPSTREAM_CODEC],
    }
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": opts},
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _addr(host, p)}} for p in ports]}],
        },
    }


def _grpc_cluster(name: str, host: str, port: int, workers: int, token_file: str) -> dict[str, Any]:
    return _local_cluster(name, host, range(port, port + workers), http2=True, token_file=token_file)


def _addr(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _provider_cluster(name: str, p: ProviderConfig) -> dict[str, Any]:
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
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _addr(p.host, p.port)}}]}],
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


def _direct_cluster(name: str, p: ProviderConfig, front_http: bool = False) -> dict[str, Any]:
    """The provider's cluster for the direct lane: credential + static headers set by Envoy."""
    cluster = _lane_cluster(name, p, direct_cluster_name(name))
    # auto_host_rewrite (on the direct routes) sends this hostname as :authority.
    cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["hostname"] = p.host if p.port in (80, 443) else f"{p.host}:{p.port}"
    sets: dict[str, str] = {}
    header, prefix, env = env_credential(p) or ("", "", None)
    if env is not None:  # the key stays in the environment: Envoy reads it at start (never in a file)
        sets[header] = f"{prefix}%ENVIRONMENT({env})%"
    sets.update(p.headers)
    mutations: list[dict[str, Any]] = hygiene.request_mutations(p) + [  # the client's headers off the list go first
        {"append": {"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}} for k, v in sets.items()
    ]
    if p.api is Api.ANTHROPIC:  # the client's anthropic-version / anthropic-beta pass; a default otherwise
        mutations.append({"append": {"header": {"key": "anthropic-version", "value": "2023-06-01"}, "append_action": "ADD_IF_ABSENT"}})
    keep = set(sets) | ({"anthropic-version", "anthropic-beta"} if p.api is Api.ANTHROPIC else set())
    mutations += [{"remove": h} for h in PROVIDER_HEADERS if h not in keep]
    # The provider's own rate-limit headers: the client sees the gateway's (the per-try stage
    # overwrites them; the HTTP front's are appended by ext_authz, so these must be gone first).
    response_mutations = hygiene.response_mutations() + ([{"remove": h} for h in RATE_LIMIT_HEADERS] if front_http else [])
    _set_upstream_filters(cluster, {"name": "sidegate.credential", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
        "mutations": {"request_mutations": mutations, "response_mutations": response_mutations}}})  # fmt: skip
    return cluster


def _lane_cluster(name: str, p: ProviderConfig, cname: str) -> dict[str, Any]:
    """The provider's cluster under another name (a lane's: its own upstream filters follow)."""
    cluster = _provider_cluster(name, p)
    cluster["name"] = cname
    cluster["load_assignment"]["cluster_name"] = cname
    return cluster


def _set_upstream_filters(cluster: dict[str, Any], *http_filters: dict[str, Any]) -> None:
    """The cluster's own upstream filter chain (it replaces the router's)."""
    opts = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    opts["http_filters"] = [*http_filters, _UPSTREAM_CODEC]


def _direct_response_headers(front_http: bool) -> list[dict[str, Any]]:
    """What the per-try stage would add to a response, from metadata (an empty value adds nothing).
    With the HTTP front, the rate-limit headers come from its answer (ext_authz adds them)."""
    out = [
        {"header": {"key": "x-sidegate-provider", "value": f"%CLUSTER_METADATA({META_NS}:provider)%"},
         "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
        {"header": {"key": "x-sidegate-attempts", "value": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%"},
         "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
    ]  # fmt: skip
    for h in () if front_http else RATE_LIMIT_HEADERS:
        out.append({"header": {"key": h, "value": f"%DYNAMIC_METADATA({META_NS}:response_headers:{h})%"},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"})  # fmt: skip
    return out


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
        if direct_lane and direct_chain(cfg, model, start) is not None:
            out.append(_model_route(model, m, groups, start, lane=DIRECT, front_http=front_http, direct_lane=True))
        if front_http:
            out.append(_model_route(model, m, groups, start, lane=TRY, front_http=True, direct_lane=direct_lane))
    return out


def _model_route(
    model: str, m: ModelConfig, groups: list[list[Any]], start: int, *, lane: str = "", front_http: bool = False,
    direct_lane: bool = False,
) -> dict[str, Any]:
    """`direct_lane`: the direct lane's error filter exists (only the `~direct` routes keep it on)."""
    name = {DIRECT: direct_cluster_name, TRY: try_cluster_name}.get(lane, cluster_name)
    direct = lane == DIRECT
    pgroups = [
        {"name": f"p{i}", "clusters": [{"cluster_name": name(r.provider), "weight": r.weight} for r in g]}
        for i, g in enumerate(groups[start:], start)
    ]
    value = route_value(model, start) + lane
    extra: dict[str, Any] = {"response_headers_to_add": _direct_response_headers(front_http)} if direct else {}
    if direct_lane and not direct:
        extra["typed_per_filter_config"] = _no_direct_errors()
    return {
            "name": f"model.{model}.{start}{lane}",
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
                    "per_try_idle_timeout": render_limits.per_try_idle_timeout(m),
                    "refresh_cluster_on_retry": True,
                    "retry_back_off": {"base_interval": "0.001s", "max_interval": "0.002s"},
                },
            },
        }  # fmt: skip


def _oversize_route(limit: int) -> dict[str, Any]:
    """Refuse a declared Content-Length over the limit up front: no filter runs, the body is never
    read (a body that outgrows Envoy's buffer while ext_authz is pending can otherwise stall)."""
    return {
        "name": "too-large",
        "match": {"prefix": "/", "headers": [{"name": "content-length", "range_match": {"start": limit + 1, "end": 1 << 62}}]},
        "direct_response": {"status": 413},
        "typed_per_filter_config": filters_off(),
    }


def _route_metadata(match: dict[str, str], front_http: bool) -> dict[str, Any]:
    """The route value as the gateway set it, from the metadata it set with it (the HTTP front's
    answer header in ext_authz's namespace, or `route` in the gateway ext_proc's): a client's own
    `x-sidegate-route` matches no route without it, also when the gateway is down and
    `failure_mode_allow` lets the request through (it gets the 503 below instead)."""
    ns, key = (AUTHZ_NS, ROUTE_HEADER) if front_http else (META_NS, ROUTE_KEY)
    return {"filter": ns, "path": [{"key": key}], "value": {"string_match": match}}


def _replay_routes(svc: Any) -> list[dict[str, Any]]:
    """HTTP front: an answer held by the worker that made it (a cache hit, a 5xx); fetched there
    under the key that ends the route value (`~replay.<worker>.<key>`: the route header stays)."""
    return [
        {"name": f"replay.{i}", "match": {"prefix": "/", "headers": [{"name": ROUTE_HEADER, "string_match": {"prefix": f"{REPLAY_ROUTE}.{i}."}}],
                                          "dynamic_metadata": [_route_metadata({"prefix": f"{REPLAY_ROUTE}.{i}."}, True)]},
         "route": {"cluster": f"sidegate_front.{i}", "timeout": duration(svc.grpc_timeout_s)},
         **({"typed_per_filter_config": _no_direct_errors()} if svc.direct_lane else {})}
        for i in range(svc.extproc_workers)
    ]  # fmt: skip


def _front_filter(cfg: SidegateConfig) -> dict[str, Any]:
    """HTTP front: Envoy's ext_authz HTTP client posts the buffered request to extproc's front."""
    svc = cfg.services
    return {
        "name": FRONT_FILTER,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "transport_api_version": "V3",
            "failure_mode_allow": svc.failure_mode_allow,
            "status_on_error": {"code": 503},
            "clear_route_cache": True,
            "with_request_body": {"max_request_bytes": 2 * cfg.listener.max_request_bytes, "allow_partial_message": False},
            # What the stages read (credentials, request id, Anthropic versions, cache directives) and
            # the client's internal headers (so the answer can drop them); nothing else is copied.
            "allowed_headers": {"patterns": [
                *({"exact": h} for h in (*CREDENTIAL_HEADERS, "x-request-id", "anthropic-version", "anthropic-beta", "cache-control")),
                {"prefix": "x-sidegate-"}]},
            "http_service": {
                "server_uri": {"uri": f"http://sidegate-front{CHECK_PREFIX}", "cluster": "sidegate_front",
                               "timeout": duration(svc.grpc_timeout_s)},
                "path_prefix": CHECK_PREFIX,
                "authorization_request": {"headers_to_add": [
                    {"key": FRONT_SOURCE_HEADER, "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"}]},
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


def _front_clusters(host: str, svc: Any) -> list[dict[str, Any]]:
    """The front's workers (HTTP/1.1, kept alive) and one cluster per worker for replays (those
    skip the per-try ext_proc)."""
    base, n = svc.front_port, svc.extproc_workers
    tf = svc.internal_token_file
    return [_local_cluster("sidegate_front", host, range(base, base + n), http2=False, token_file=tf)] + [
        _local_cluster(f"sidegate_front.{i}", host, range(base + i, base + i + 1), http2=False, token_file=tf)
        for i in range(n)
    ]


# The client's API: from the gateway's metadata when it ran (the upstream filter may already have
# rewritten :path to the provider's), else from the client's path.
_FRONT_MD = f"metadata.filter_metadata['{AUTHZ_NS}']"
_ANTHROPIC_CLIENT = (
    "(has(metadata.filter_metadata.sidegate) && has(metadata.filter_metadata.sidegate.api)"
    " ? metadata.filter_metadata.sidegate.api == 'anthropic'"
    f" : (('{AUTHZ_NS}' in metadata.filter_metadata && '{FRONT_API_HEADER}' in {_FRONT_MD})"
    f" ? {_FRONT_MD}['{FRONT_API_HEADER}'] == 'anthropic' : request.path.startsWith('/v1/messages')))"
)


# Envoy's reply when a Sidegate filter's service is unreachable (ext_proc's or ext_authz's error
# answer), or the gateway-unavailable route a fail-open request reaches: one message for all.
_GATEWAY_DOWN = ("(response.code_details.startsWith('ext_proc_error') || response.code_details.startsWith('ext_authz_error')"
                 " || response.code_details == 'direct_response')")  # fmt: skip


def _local_reply_mapper(status: int, anthropic: bool | None, body: str, when: str = "") -> dict[str, Any]:
    """`anthropic` None: whatever the client (a reply before the request line was read). `when`: a
    further CEL condition."""
    client = "true" if anthropic is None else _ANTHROPIC_CLIENT if anthropic else f"!{_ANTHROPIC_CLIENT}"
    client += f" && {when}" if when else ""
    return {
        "filter": {
            "and_filter": {
                "filters": [
                    {"status_code_filter": {"comparison": {"op": "EQ", "value": {"default_value": status, "runtime_key": f"sidegate.lr.{status}"}}}},
                    # Only Envoy's own replies: Sidegate's answers (details "sidegate") are already in format.
                    {"extension_filter": {
                        "name": "envoy.access_loggers.extension_filters.cel",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                            # ext_authz_denied: the front's (or authz service's) own answer, in format.
                            "expression": f"response.code_details != '{REPLY_DETAILS}'"
                                          f" && response.code_details != 'ext_authz_denied' && {client}",
                        },
                    }},
                ]
            }
        },
        "body_format_override": {"text_format_source": {"inline_string": body}, "content_type": "application/json"},
    }


def _local_reply_config() -> dict[str, Any]:
    """Envoy's own replies (413 too large, 503 no upstream, 504 timeout...) in the client's API format."""
    anth = '{"type":"error","error":{"type":"%s","message":"%s"}}'
    oai = '{"error":{"message":"%s","type":"%s","param":null,"code":null}}'
    cases = [
        (413, "request_too_large", "invalid_request_error", "Request body too large for this gateway."),
        (503, "overloaded_error", "server_error", "The Sidegate gateway service is unavailable.", _GATEWAY_DOWN),
        (503, "overloaded_error", "server_error", "Upstream unavailable: %LOCAL_REPLY_BODY%"),
        (504, "timeout_error", "server_error", "Upstream request timed out."),
        (502, "api_error", "server_error", "Bad gateway: %LOCAL_REPLY_BODY%"),
        (500, "api_error", "server_error", "Gateway error: %LOCAL_REPLY_BODY%"),
        (404, "not_found_error", "invalid_request_error", "Unknown path."),
        *LOCAL_REPLY_CASES,
    ]
    # Envoy's 500 for an answer over listener.max_response_bytes: the provider's fault, a 502.
    too_large = f"response.code_details == '{TOO_LARGE_DETAILS}'"
    mappers = [{**_local_reply_mapper(500, anthropic, body, too_large), "status_code": 502}
               for anthropic, body in zip((True, False), too_large_bodies(), strict=True)]  # fmt: skip
    for status, atype, otype, msg, *when in cases:
        mappers.append(_local_reply_mapper(status, True, anth % (atype, msg), *when))
        mappers.append(_local_reply_mapper(status, False, oai % (msg, otype), *when))
    # The client's API cannot be told when the codec refused the request before its path was
    # read (a CEL error fails the filters above): OpenAI's format, the more common client.
    mappers += [_local_reply_mapper(status, None, oai % (msg, otype), *when) for status, _, otype, msg, *when in cases]
    return {"mappers": mappers}


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


def _lua_str(s: str | None) -> str:
    return "nil" if s is None else '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _try_cluster(name: str, p: ProviderConfig, timeout_s: float) -> dict[str, Any]:
    """The provider's cluster for the try lane: the per-try stage reached from Lua over HTTP."""
    cname = try_cluster_name(name)
    cluster = _lane_cluster(name, p, cname)
    header, prefix, env = env_credential(p) or ("", "", None)
    source = string.Template(lua.read("envoy_try_lane.lua")).substitute(
        key_header=_lua_str(header), key_prefix=_lua_str(prefix), key_env=_lua_str(env),
        cluster=cname, timeout_ms=int(timeout_s * 1000), prefix=TRY_PREFIX, try_ns=TRY_NS, authz_ns=AUTHZ_NS,
        meta_header=FRONT_META_HEADER, api_header=FRONT_API_HEADER,
        **{f"h_{k.lower()}": v for k, v in vars(TryWire).items() if k.isupper()},
    )  # fmt: skip
    _set_upstream_filters(cluster, hygiene.request_filter(p), {"name": "sidegate.try", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
        "default_source_code": {"inline_string": source}}}, hygiene.response_filter())  # fmt: skip
    return cluster


def _direct_errors(cfg: SidegateConfig) -> dict[str, Any]:
    """Router-level Lua (in Envoy, no gRPC): a direct-lane provider error gets the per-try stage's
    treatment: 401/403 (our key refused) and unparseable bodies -> 502 in the client's format,
    the provider key scrubbed from error bodies that echo it; a stream is watched event by event
    (sidegate/bootstrap/stream.py): a broken or cut stream ends with an error event."""

    def lua_str(b: bytes) -> str:  # a Lua long string: no escaping needed for JSON
        return "[==[" + b.decode() + "]==]"

    entries = []
    for name, p in cfg.providers.items():
        if direct_provider(p):  # in the direct lane the client's API is the provider's
            env = _lua_str(p.api_key_env)
            refused = lua_str(format_error(p.api, provider_refused_key(name)))
            invalid = lua_str(format_error(p.api, provider_invalid_response(name)))
            bad, cut = (lua_str(e) for e in lua_events(p.api))
            entries.append(f'["{name}"] = {{env = {env}, refused = {refused}, invalid = {invalid}, api = "{p.api.value}", bad = {bad}, cut = {cut}}}')
    return {
        "name": DIRECT_ERRORS_FILTER,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": string.Template(lua.read("envoy_direct_errors.lua")).substitute(
                providers=", ".join(entries), json_types=", ".join(f'["{t}"] = true' for t in JSON_CONTENT_TYPES),
                stream_watch=stream_watch(), usage_ns=USAGE_NS, meta_ns=META_NS, authz_ns=AUTHZ_NS,
                lane_header=FRONT_LANE_HEADER)},
        },
    }


def _usage_to_metadata() -> dict[str, Any]:
    """Router-level: the usage of a JSON response body -> dynamic metadata `sidegate.usage` (C++).
    It also parses full-lane JSON responses: a per-route `FilterConfig.disabled` cannot switch it
    off there, because Envoy settles which filters are disabled from the route cached when the
    filter chain is built, before the gateway picks the route (verified: 1.40 still runs it)."""
    rules = [_usage_rule(path, key) for path, key in _USAGE_FIELDS]
    # A body that is not JSON (cut, HTML...) flags the response for the error filter.
    rules[0]["on_error"] = {"metadata_namespace": USAGE_NS, "key": "invalid", "value": {"number_value": 1}}
    return {
        "name": "sidegate.usage",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.json_to_metadata.v3.JsonToMetadata",
            "response_rules": {"rules": rules, "allow_content_types": list(JSON_CONTENT_TYPES)},
        },
    }


# In a stream the same paths hold in OpenAI's usage chunk and Anthropic's message_delta (its
# output_tokens is the total); Anthropic's message_start carries the input side under `message`.
_MESSAGE_START_KEYS = ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens", "model")
_SSE_USAGE_FIELDS = (
    *_USAGE_FIELDS,
    *((("message", *path), key) for path, key in _USAGE_FIELDS if key in _MESSAGE_START_KEYS),
)


def _usage_rule(path: tuple[str, ...], key: str) -> dict[str, Any]:
    """A json_to_metadata rule (also the shape of the SSE JSON parser's): `path` -> `sidegate.usage` `key`."""
    return {"selectors": [{"key": k} for k in path],
            "on_present": {"metadata_namespace": USAGE_NS, "key": key, "type": "STRING" if key == "model" else "NUMBER"}}  # fmt: skip


def _sse_usage_to_metadata() -> dict[str, Any]:
    """Router-level: the usage carried by a direct-lane stream's events -> `sidegate.usage` (C++),
    the same keys as `_usage_to_metadata` for JSON bodies."""
    rules = [{"rule": _usage_rule(path, key)} for path, key in _SSE_USAGE_FIELDS]
    return {
        "name": "sidegate.sse_usage",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.sse_to_metadata.v3.SseToMetadata",
            "response_rules": {"content_parser": {"name": "envoy.content_parsers.json", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.content_parsers.json.v3.JsonContentParser", "rules": rules}}},
        },
    }  # fmt: skip


def _md_filter(ns: str, key: str, value: dict[str, Any], *, if_missing: bool = False) -> dict[str, Any]:
    """An access-log filter on one dynamic metadata value (`if_missing`: its result when the key is
    absent). Envoy's MetadataFilter ignores the matcher's `invert` (verified on 1.40)."""
    matcher = {"filter": ns, "path": [{"key": key}], "value": value}
    return {"metadata_filter": {"matcher": matcher, "match_if_key_not_found": if_missing}}


def _direct_log_filter(svc: Any) -> dict[str, Any]:
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
        lane({"string_match": {"exact": "direct"}}),
        {"and_filter": {"filters": [lane({"string_match": {"exact": "try"}}), pending]}},
    ]}}  # fmt: skip


def _direct_access_log(svc: Any) -> dict[str, Any]:
    """Finished direct-lane requests, batched to extproc's AccessLogService (the observe stage);
    with the HTTP front also try-lane requests whose last try never got its response (aborted)."""
    return {
        "name": "envoy.access_loggers.http_grpc",
        "filter": _direct_log_filter(svc),
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


def bootstrap(cfg: SidegateConfig, *, sidegate_filters: bool = True) -> dict[str, Any]:
    """The Envoy bootstrap. `sidegate_filters=False` renders the same listener and clusters with no
    Sidegate filters and the first model's route as catch-all: the "Envoy alone" benchmark baseline."""
    from sidegate.bootstrap.accesslog import (  # they read this module's metadata namespaces
        access_log,
        front_format,
    )

    svc = cfg.services
    gateway_proc = _ext_proc(
        "sidegate_extproc",
        "gateway",
        svc.grpc_timeout_s,
        {"request_header_mode": "SEND", "request_body_mode": "BUFFERED",
         "response_header_mode": "SKIP", "response_body_mode": "NONE",
         "request_trailer_mode": "SKIP", "response_trailer_mode": "SKIP"},
        failure_mode_allow=svc.failure_mode_allow,
        status_on_error={"code": 503},
        stat_prefix="gateway",
        **({"request_attributes": ["source.address"]} if svc.auth == "inline" else {}),
        metadata_options={
            "forwarding_namespaces": {"untyped": [AUTHZ_NS]},
            "receiving_namespaces": {"untyped": [META_NS]},
        },
    )  # fmt: skip
    upstream_proc = _ext_proc(
        "sidegate_extproc",
        "upstream",
        svc.grpc_timeout_s,
        # Request headers must be SEND: with SKIP the upstream codec sends them before the body
        # response could mutate them (verified on 1.40).
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
            "receiving_namespaces": {"untyped": [META_NS]},
        },
    )  # fmt: skip
    ext_authz = {
        "name": "envoy.filters.http.ext_authz",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "grpc_service": {"envoy_grpc": {"cluster_name": "sidegate_authz"}, "timeout": duration(svc.grpc_timeout_s)},
            "transport_api_version": "V3",
            "failure_mode_allow": svc.failure_mode_allow,
            "status_on_error": {"code": 503},
        },
    }
    front_http = svc.front == "http" and sidegate_filters
    routes = [_oversize_route(cfg.listener.max_request_bytes)]
    if front_http:
        routes += _replay_routes(svc)
    routes += [r for name in cfg.models for r in _model_routes(cfg, name)]
    routes.append(unsupported_encoding_route())  # model routes match only once the gateway ran
    # An API path without a route header means the gateway filter did not run (it is down and
    # failure_mode_allow let the request through): nothing can route it, say so with a 503.
    for path in ("/v1/chat/completions", "/v1/messages"):
        routes.append({"name": f"gateway-unavailable{path}", "match": {"path": path},
                       "direct_response": {"status": 503, "body": {"inline_string": "the Sidegate gateway service is unavailable"}}})  # fmt: skip
    routes.append({"name": "unrouted", "match": {"prefix": "/"}, "direct_response": {"status": 404}})
    if not sidegate_filters:  # the first model's route, without anything Sidegate's filters read
        routes = [{**{k: v for k, v in routes[1].items() if k != "typed_per_filter_config"}, "match": {"prefix": "/"}}]
    direct = svc.direct_lane and sidegate_filters
    fields = front_format() if front_http else None
    logs = access_log(cfg.observability.access_log, fields) if cfg.observability.access_log else []
    if direct or front_http:
        logs.append(_direct_access_log(svc))
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "sidegate",
        **({"access_log": logs} if logs else {}),
        "codec_type": "AUTO",
        "generate_request_id": True,
        **render_limits.hcm_timeouts(cfg.listener),
        "request_timeout": duration(cfg.listener.request_timeout_s),
        "request_headers_timeout": "10s",
        "local_reply_config": _local_reply_config(),
        "route_config": {
            "name": "sidegate",
            "virtual_hosts": [
                {
                    "name": "sidegate",
                    "domains": ["*"],
                    "request_body_buffer_limit": cfg.listener.max_request_bytes,
                    "routes": routes,
                }
            ],
        },
        "http_filters": [
            request_decompressor(),
            *([ext_authz] if svc.auth == "ext_authz" else []),
            _front_filter(cfg) if front_http else {"name": "sidegate.gateway", "typed_config": gateway_proc},
            answer_limit_filter(cfg),
            *([_direct_errors(cfg), _usage_to_metadata(), _sse_usage_to_metadata()] if direct else []),
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
                    # No x-envoy-* headers of the router's to providers (x-envoy-original-host: the
                    # client's Host) or clients (x-envoy-upstream-service-time).
                    "suppress_envoy_headers": True,
                    # The full lane: the per-try stage applies the header allow-lists itself
                    # (sidegate/features/upstream.py; no regex here, so mesh sidecars need no RE2 runtime limit).
                    "upstream_http_filters": [
                        {"name": "sidegate.upstream", "typed_config": upstream_proc},
                        whole_answer_filter(),
                        _UPSTREAM_CODEC,
                    ],
                },
            },
        ],
    }  # fmt: skip
    if not sidegate_filters:
        hcm["http_filters"] = [
            {"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
        ]
    clusters = [_provider_cluster(name, p) for name, p in cfg.providers.items()]
    if direct:
        clusters += [_direct_cluster(name, p, front_http) for name, p in cfg.providers.items() if direct_provider(p)]
    svc_host = local_address(svc.host)
    if sidegate_filters:  # (the baseline calls no Sidegate service: nor needs the token file)
        clusters.append(_grpc_cluster("sidegate_authz", svc_host, svc.authz_port, svc.authz_workers, svc.internal_token_file))
        clusters.append(_grpc_cluster("sidegate_extproc", svc_host, svc.extproc_port, svc.extproc_workers, svc.internal_token_file))
        limit_extproc_buffers(clusters[-1], cfg)
    if front_http:
        clusters += _front_clusters(svc_host, svc)
        clusters += [_try_cluster(name, p, svc.grpc_timeout_s) for name, p in cfg.providers.items()]
    return {
        "node": trust.NODE,
        "admin": {"address": _addr(cfg.listener.admin_host, cfg.listener.admin_port)},
        "overload_manager": render_limits.overload_manager(cfg.listener),
        "layered_runtime": hygiene.runtime(),
        "static_resources": {
            "listeners": [
                {
                    "name": "sidegate",
                    "address": _addr(cfg.listener.host, cfg.listener.port),
                    "per_connection_buffer_limit_bytes": listener_buffer_limit(cfg),
                    "filter_chains": [
                        {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
                    ],
                }
            ],
            "clusters": clusters,
        },
    }


def render_yaml(cfg: SidegateConfig) -> str:
    header = "# Rendered by `sidegate render` from the Sidegate config. Do not edit by hand.\n"
    return header + yaml.safe_dump(bootstrap(cfg), sort_keys=False, width=120)
