"""Envoy's OpenTelemetry tracer in the rendered bootstrap: only when tracing is configured."""

from importlib import resources

import pytest
from render_helpers import assert_envoy_validates

from sidegate import config
from sidegate.bootstrap import render
from sidegate.bootstrap.tracing import OTLP_CLUSTER


def _demo(tracing: dict | None = None, front: str = "ext_proc") -> config.SidegateConfig:
    cfg = config.load(str(resources.files("sidegate") / "data" / "demo.yaml"), env={})
    if tracing is not None:
        cfg.observability.tracing = config.TracingConfig.model_validate(tracing)
    if front == "http":
        cfg.services.auth, cfg.services.front = "inline", "http"
    return cfg


def _hcm(boot: dict) -> dict:
    return boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def test_nothing_of_tracing_is_rendered_when_it_is_off():
    boot = render.bootstrap(_demo())
    assert "tracing" not in _hcm(boot)
    assert OTLP_CLUSTER not in {c["name"] for c in boot["static_resources"]["clusters"]}
    assert "opentelemetry" not in render.render_yaml(_demo())


def test_tracing_renders_the_tracer_its_cluster_and_its_flush_interval():
    boot = render.bootstrap(
        _demo({"endpoint": "otel.example:4317", "sample_ratio": 0.25, "service_name": "gw"})
    )
    tracing = _hcm(boot)["tracing"]
    assert "random_sampling" not in tracing  # (its 100 % default: the tracer's sampler decides)
    assert tracing["spawn_upstream_span"] is True
    otel = tracing["provider"]["typed_config"]
    assert otel["sampler"]["name"] == "envoy.tracers.opentelemetry.samplers.parent_based"
    ratio = otel["sampler"]["typed_config"]["wrapped_sampler"]["typed_config"]["sampling_percentage"]
    assert ratio == {"numerator": 250_000, "denominator": "MILLION"}
    assert tracing["provider"]["name"] == "envoy.tracers.opentelemetry"
    assert otel["service_name"] == "gw" and otel["grpc_service"]["envoy_grpc"]["cluster_name"] == OTLP_CLUSTER
    cluster = next(c for c in boot["static_resources"]["clusters"] if c["name"] == OTLP_CLUSTER)
    opts = cluster["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    assert "http2_protocol_options" in opts["explicit_http_config"]
    addr = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"][
        "socket_address"
    ]
    assert addr == {"address": "otel.example", "port_value": 4317}
    assert "http_filters" not in opts  # no internal token for a collector (sidegate/trust.py)
    static = boot["layered_runtime"]["layers"][0]["static_layer"]
    assert static["tracing.opentelemetry.flush_interval_ms"] == 1000


@pytest.mark.parametrize("front", ["ext_proc", "http"])
def test_a_traced_bootstrap_passes_envoy_validate(tmp_path, front):
    cfg = _demo({"endpoint": "127.0.0.1:4317", "sample_ratio": 0.01}, front)
    assert_envoy_validates(cfg, tmp_path)
