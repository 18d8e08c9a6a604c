"""xDS mode's pieces of the bootstrap (`services.xds`): the xDS server's cluster, Envoy's
`dynamic_resources` (everything over one ADS stream), and the filter that tells every Sidegate
filter which routing document version Envoy's routes are at (contract 1, docs/control-plane.md
"Live routing over xDS").

The version travels as the `x-sidegate-config-version` request header, set by a `header_mutation`
filter first in the chain: its own (listener) config removes whatever a client sent, and the
per-route config on the virtual host, which comes with the routes over RDS, sets version N. The
gateway stage (ext_proc or the HTTP front) then routes with version N's models, so Envoy's route
table and the gateway's route values always agree. The static bootstrap has no per-route config:
the header is only ever removed there.
"""

from __future__ import annotations

from typing import Any

from sidegate.bootstrap.clusters import grpc_cluster
from sidegate.config import SidegateConfig, local_address
from sidegate.wire import CONFIG_VERSION_HEADER, XDS_CLUSTER

VERSION_FILTER = "sidegate.config_version"
_MUTATION = "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation"
_PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutationPerRoute"


def version_filter() -> dict[str, Any]:
    """First HTTP filter: a client's own version header is removed (the filter's config runs
    before the per-route config, which sets the routes' version)."""
    return {"name": VERSION_FILTER, "typed_config": {
        "@type": _MUTATION, "mutations": {"request_mutations": [{"remove": CONFIG_VERSION_HEADER}]}}}  # fmt: skip


def set_on_routes(route_config: dict[str, Any], version: int) -> None:
    """The routes of routing document `version` set it on every request (the virtual host's
    per-route config: it applies whichever route the request takes)."""
    per_route = {"@type": _PER_ROUTE, "mutations": {"request_mutations": [{"append": {
        "header": {"key": CONFIG_VERSION_HEADER, "value": str(version)},
        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}}]}}  # fmt: skip
    for vhost in route_config["virtual_hosts"]:
        vhost.setdefault("typed_per_filter_config", {})[VERSION_FILTER] = per_route


def xds_cluster(cfg: SidegateConfig) -> dict[str, Any]:
    """The xDS server (`sidegate serve xds`, loopback, HTTP/2). Its requests carry the internal
    token like every call to a Sidegate service (the token file is file-based SDS: no xDS needed)."""
    svc = cfg.services
    return grpc_cluster(XDS_CLUSTER, local_address(svc.host), svc.xds_port, 1, svc.internal_token_file)


def dynamic_resources() -> dict[str, Any]:
    """Listener and clusters over ADS (the routes follow the listener's `rds` over the same stream)."""
    ads = {"ads": {}, "resource_api_version": "V3"}
    return {
        "ads_config": {"api_type": "GRPC", "transport_api_version": "V3", "set_node_on_first_message_only": True,
                       "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}]},
        "lds_config": ads,
        "cds_config": ads,
    }  # fmt: skip


def rds(name: str) -> dict[str, Any]:
    """The connection manager's routes over RDS (on the ADS stream), never inline in xDS mode."""
    return {"route_config_name": name, "config_source": {"ads": {}, "resource_api_version": "V3"}}
