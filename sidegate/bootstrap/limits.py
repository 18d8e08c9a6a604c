"""Envoy's connection and idle limits, rendered from `listener.*` and `models.*` (used by the
listener, the routes and the bootstrap's overload manager)."""

from __future__ import annotations

from typing import Any

from sidegate.config import ListenerConfig, ModelConfig, SidegateConfig

BODY_ALLOWANCE_S_PER_MIB = 0.25
"""Extra time per MiB of `listener.max_request_bytes` that Envoy gives the Python services per
message: a body of the largest size is moved over gRPC (or HTTP) and parsed, possibly behind others
(measured: 16 concurrent 20 MiB requests on 2 busy cores waited past 5 s; docs/architecture.md,
"Limits")."""


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


def service_timeout_s(cfg: SidegateConfig) -> float:
    """How long Envoy waits for one answer of a Sidegate service that reads bodies (the gateway and
    per-try ext_proc, the HTTP front and its try lane): `services.grpc_timeout_s` plus the time the
    largest request body may take to arrive and be parsed (13 s with the defaults)."""
    return cfg.services.grpc_timeout_s + BODY_ALLOWANCE_S_PER_MIB * cfg.listener.max_request_bytes / (1024 * 1024)


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
