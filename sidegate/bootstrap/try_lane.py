"""The try lane's Envoy config (HTTP front, non-streaming requests that need the per-try stage): each
provider has a second cluster whose upstream Lua filter (lua/envoy_try_lane.lua) posts every try
to the front (extproc/trylane.py) instead of opening a gRPC ext_proc stream."""

from __future__ import annotations

import string
from typing import Any

from sidegate import lua
from sidegate.bootstrap import hygiene
from sidegate.bootstrap.clusters import lane_cluster, set_upstream_filters
from sidegate.config import ProviderConfig
from sidegate.credentials.env import env_credential
from sidegate.wire import (
    AUTHZ_NS,
    FRONT_API_HEADER,
    FRONT_META_HEADER,
    TRY_NS,
    TRY_PREFIX,
    TryWire,
    try_cluster_name,
)


def try_cluster(name: str, p: ProviderConfig, timeout_s: float) -> dict[str, Any]:
    """The provider's cluster for the try lane: the per-try stage reached from Lua over HTTP."""
    cname = try_cluster_name(name)
    cluster = lane_cluster(name, p, cname)
    header, prefix, env = env_credential(p) or ("", "", None)
    source = string.Template(lua.read("envoy_try_lane.lua")).substitute(
        key_header=lua.literal(header), key_prefix=lua.literal(prefix), key_env=lua.literal(env),
        cluster=cname, timeout_ms=int(timeout_s * 1000), prefix=TRY_PREFIX, try_ns=TRY_NS, authz_ns=AUTHZ_NS,
        meta_header=FRONT_META_HEADER, api_header=FRONT_API_HEADER,
        **{f"h_{k.lower()}": v for k, v in vars(TryWire).items() if k.isupper()},
    )  # fmt: skip
    set_upstream_filters(cluster, hygiene.request_filter(p), {"name": "sidegate.try", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
        "default_source_code": {"inline_string": source}}}, hygiene.response_filter())  # fmt: skip
    return cluster
