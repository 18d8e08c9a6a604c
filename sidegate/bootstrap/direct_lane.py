"""The direct lane's Envoy config. A try whose provider takes the client's request as is (same API,
same model name, one key from an environment variable, no path rewrite: sidegate/lanes.py) needs
no Python per try: its cluster injects the credential itself (upstream header_mutation reading the
key from Envoy's environment), Envoy's json_to_metadata reads the usage from a JSON response and
the stream watch (sidegate/bootstrap/stream.py) from a stream's events, a router-level Lua filter (lua/envoy_direct_errors.lua) gives a provider's errors
the per-try stage's treatment, and the access log (gRPC ALS, batched:
sidegate/bootstrap/accesslog.py) hands the finished request to the completion hooks (quota true-up,
ledger, metrics, breaker)."""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping
from typing import Any

from sidegate import lua
from sidegate.bootstrap import hygiene
from sidegate.bootstrap.clusters import lane_cluster, set_upstream_filters
from sidegate.bootstrap.stream import lua_events, lua_terms, stream_watch
from sidegate.config import ProviderConfig
from sidegate.credentials.env import env_credential
from sidegate.errors import Api, format_error, provider_invalid_response, provider_refused_key
from sidegate.wire import (
    AUTHZ_NS,
    FRONT_API_HEADER,
    FRONT_LANE_HEADER,
    META_NS,
    PROVIDER_HEADERS,
    RATE_LIMIT_HEADERS,
    USAGE_NS,
    direct_cluster_name,
)

DIRECT_ERRORS_FILTER = "sidegate.direct_errors"


def no_direct_errors() -> dict[str, Any]:
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
_USAGE_FIELDS = (  # (json path, metadata key): OpenAI chat, Responses and Anthropic bodies
    (("usage", "prompt_tokens"), "prompt_tokens"),
    (("usage", "completion_tokens"), "completion_tokens"),
    (("usage", "prompt_tokens_details", "cached_tokens"), "cached_tokens"),
    # Responses: input_tokens / output_tokens as Anthropic names them, but input_tokens counts the
    # cached ones too (extproc/direct.py tells the two apart by this key).
    (("usage", "input_tokens_details", "cached_tokens"), "cached_tokens"),
    (("usage", "input_tokens"), "input_tokens"),
    (("usage", "output_tokens"), "output_tokens"),
    (("usage", "cache_read_input_tokens"), "cache_read_input_tokens"),
    (("usage", "cache_creation_input_tokens"), "cache_creation_input_tokens"),
    (("model",), "model"),
)


def direct_cluster(name: str, p: ProviderConfig, front_http: bool = False) -> dict[str, Any]:
    """The provider's cluster for the direct lane: credential + static headers set by Envoy."""
    cluster = lane_cluster(name, p, direct_cluster_name(name))
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
    set_upstream_filters(cluster, {"name": "sidegate.credential", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
        "mutations": {"request_mutations": mutations, "response_mutations": response_mutations}}})  # fmt: skip
    return cluster


def direct_response_headers(front_http: bool) -> list[dict[str, Any]]:
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


WATCH_APIS = (Api.OPENAI, Api.ANTHROPIC, Api.RESPONSES)
"""The APIs a direct-lane provider speaks (`lanes.direct_provider`: never Gemini's or Bedrock's),
each with its stream watch's terminal events in the error filter."""


def direct_errors_metadata(providers: Mapping[str, ProviderConfig], names: Iterable[str]) -> dict[str, Any]:
    """A `~direct` route's `metadata`: per provider of its chain, what the error filter needs to
    treat that provider's answer (its key's environment variable, its API, the 502 bodies that
    name it). The filter reads it from the route the gateway picked (`handle:metadata()`: the
    route's `filter_metadata` under the filter's own name, verified on 1.40) and takes the entry
    of the provider that served the try (`x-sidegate-provider`). It comes with the routes (RDS),
    so the listener never lists providers: adding or removing one changes no listener (LDS),
    whose update would drain every client connection."""
    entries: dict[str, Any] = {}
    for name in names:
        p = providers[name]
        entry = {"api": p.api.value,
                 "refused": format_error(p.api, provider_refused_key(name)).decode(),
                 "invalid": format_error(p.api, provider_invalid_response(name)).decode()}  # fmt: skip
        if p.api_key_env is not None:
            entry["env"] = p.api_key_env
        entries[name] = entry
    return {"filter_metadata": {DIRECT_ERRORS_FILTER: entries}}


def direct_errors_filter() -> dict[str, Any]:
    """Router-level Lua (lua/envoy_direct_errors.lua: in Envoy, no gRPC): a direct-lane provider
    error gets the per-try stage's treatment: 401/403 (our key refused) and unparseable bodies ->
    502 in the client's format, the provider key scrubbed from error bodies that echo it; a stream
    is watched event by event (sidegate/bootstrap/stream.py): a broken or cut stream ends with an
    error event. Nothing in it depends on the routing document: the providers' entries come with
    the routes (:func:`direct_errors_metadata`); the stream watches are per API."""

    def lua_str(b: bytes) -> str:  # a Lua long string: no escaping needed for JSON
        return "[==[" + b.decode() + "]==]"

    watches = []
    for api in WATCH_APIS:
        bad, cut = (lua_str(e) for e in lua_events(api))
        watches.append(f'["{api.value}"] = {{api = "{api.value}", bad = {bad}, cut = {cut}, terms = {lua_terms(api)}}}')
    return {
        "name": DIRECT_ERRORS_FILTER,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": string.Template(lua.read("envoy_direct_errors.lua")).substitute(
                watches=", ".join(watches), responses=Api.RESPONSES.value, api_header=FRONT_API_HEADER,
                json_types=", ".join(f'["{t}"] = true' for t in JSON_CONTENT_TYPES),
                stream_watch=stream_watch(), usage_ns=USAGE_NS, meta_ns=META_NS, authz_ns=AUTHZ_NS,
                lane_header=FRONT_LANE_HEADER)},
        },
    }


def usage_to_metadata() -> dict[str, Any]:
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


def _usage_rule(path: tuple[str, ...], key: str) -> dict[str, Any]:
    """A json_to_metadata rule: `path` -> `sidegate.usage` `key`."""
    return {"selectors": [{"key": k} for k in path],
            "on_present": {"metadata_namespace": USAGE_NS, "key": key, "type": "STRING" if key == "model" else "NUMBER"}}  # fmt: skip


def router_filters() -> list[dict[str, Any]]:
    """The lane's router-level filters, in their order: the error Lua runs on the response after
    the usage filters (Envoy runs response filters in reverse), so it sees their metadata. None of
    them depends on the routing document (the listener stays the same when it changes). A stream's
    usage is read by the error filter's stream watch (no sse_to_metadata: its JSON parse of every
    event held each chunk back ~16 µs per event, the first event waiting for the whole burst)."""
    return [direct_errors_filter(), usage_to_metadata()]
