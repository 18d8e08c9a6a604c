"""Envoy's connection and idle limits, rendered from `listener.*` and `models.*` (used by the
listener, the routes and the bootstrap's overload manager)."""

from __future__ import annotations

from typing import Any

from sidegate.config import ListenerConfig, ModelConfig


def duration(seconds: float) -> str:
    """A protobuf Duration as Envoy's YAML takes it (every timeout of the bootstrap)."""
    return f"{seconds:.3f}s"


def overload_manager(lst: ListenerConfig) -> dict[str, Any]:
    """A global cap on open downstream connections: past it Envoy refuses new connections (and
    stops warning at start-up that nothing bounds them)."""
    return {
        "resource_monitors": [{
            "name": "envoy.resource_monitors.global_downstream_max_connections",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                "max_active_downstream_connections": lst.max_connections,
            },
        }],
    }  # fmt: skip


def hcm_timeouts(lst: ListenerConfig) -> dict[str, Any]:
    """Idle connection and idle stream timeouts of the listener's connection manager."""
    return {
        "stream_idle_timeout": duration(lst.stream_idle_timeout_s),
        "common_http_protocol_options": {"idle_timeout": duration(lst.idle_timeout_s)},
    }


def per_try_idle_timeout(m: ModelConfig) -> str:
    """The router's idle timer per try: unlike `per_try_timeout` it keeps running once the
    provider's answer has started, so a stream that stalls mid-way is reset."""
    return duration(m.per_try_idle_timeout_s or m.per_try_timeout_s)
