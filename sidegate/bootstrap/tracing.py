"""Envoy's own OpenTelemetry tracer (`observability.tracing`): the HTTP connection manager's
`tracing`, the collector's cluster and the runtime keys of the tracer's batching. Nothing of it is
rendered when tracing is off (no endpoint), so an untraced Envoy neither samples nor connects.

Envoy starts (or continues, from the client's `traceparent`) the request's span, gives each call
to the Sidegate services a child span whose context it sends along (docs/observability.md, "How a
trace is joined"), and one span per upstream try (`spawn_upstream_span`).
"""

from __future__ import annotations

from typing import Any

from sidegate.bootstrap.limits import duration
from sidegate.config import TracingConfig

OTLP_CLUSTER = "sidegate_otlp"

FLUSH_INTERVAL_MS = 1000
"""How often Envoy's tracer exports its buffered spans (Envoy's default: 5 s). A second keeps a
trace's Envoy and Sidegate halves arriving together (Sidegate's batch exporter flushes as often)
at one small export per second and worker."""


def hcm_tracing(t: TracingConfig) -> dict[str, Any]:
    """The HTTP connection manager's `tracing`: export OTLP/gRPC to the collector, sampled by the
    tracer's own parent-based sampler (below), not by the connection manager's random sampling."""
    return {
        # One span per try (a retry or a fallback to the next provider is a sibling span).
        "spawn_upstream_span": True,
        "provider": {
            "name": "envoy.tracers.opentelemetry",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                "grpc_service": {"envoy_grpc": {"cluster_name": OTLP_CLUSTER}, "timeout": duration(t.timeout_s)},
                "service_name": t.service_name,
                "sampler": sampler(t.sample_ratio),
            },
        },
    }  # fmt: skip


def sampler(ratio: float) -> dict[str, Any]:
    """OpenTelemetry's ParentBased(TraceIdRatioBased(ratio)): a client's `traceparent` keeps its
    own sampled flag, a new trace is sampled by its id (the same decision Sidegate's SDK would take).
    The connection manager's `random_sampling` alone would not do: at 0 % it drops a client's
    sampled trace too, and it never looks at the trace id (both measured on 1.40)."""
    ratio_based = {
        "@type": "type.googleapis.com/envoy.extensions.tracers.opentelemetry.samplers.v3.TraceIdRatioBasedSamplerConfig",
        "sampling_percentage": {"numerator": round(ratio * 1_000_000), "denominator": "MILLION"},
    }
    return {
        "name": "envoy.tracers.opentelemetry.samplers.parent_based",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.tracers.opentelemetry.samplers.v3.ParentBasedSamplerConfig",
            "wrapped_sampler": {
                "name": "envoy.tracers.opentelemetry.samplers.trace_id_ratio_based",
                "typed_config": ratio_based,
            },
        },
    }


def otlp_cluster(t: TracingConfig) -> dict[str, Any]:
    """The collector (plain HTTP/2: OTLP/gRPC). STRICT_DNS takes a name or an address."""
    return {
        "name": OTLP_CLUSTER,
        "type": "STRICT_DNS",
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": OTLP_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": t.host, "port_value": t.port}}}}]}],
        },
    }  # fmt: skip


def runtime_keys(t: TracingConfig) -> dict[str, Any]:
    """The tracer's batching, in the static runtime layer (it has no bootstrap field for it)."""
    return {"tracing.opentelemetry.flush_interval_ms": FLUSH_INTERVAL_MS} if t.enabled else {}
