"""Envoy's connection and idle limits: on by default, taken from the config, valid for Envoy; and
one message for a Sidegate service that is down."""

from importlib import resources

from render_helpers import assert_envoy_validates

from sidegate import config
from sidegate.bootstrap import render


def _demo(**listener: float) -> config.SidegateConfig:
    cfg = config.load(str(resources.files("sidegate") / "data" / "demo.yaml"), env={})
    for k, v in listener.items():
        setattr(cfg.listener, k, v)
    return cfg


def _hcm(b: dict) -> dict:
    return b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def _retry_policies(b: dict) -> list[dict]:
    routes = _hcm(b)["route_config"]["virtual_hosts"][0]["routes"]
    return [r["route"]["retry_policy"] for r in routes if "retry_policy" in r.get("route", {})]


def test_limits_are_on_by_default():
    b = render.bootstrap(_demo())
    (mon,) = b["overload_manager"]["resource_monitors"]
    assert mon["name"] == "envoy.resource_monitors.global_downstream_max_connections"
    assert mon["typed_config"]["max_active_downstream_connections"] == 10_000
    hcm = _hcm(b)
    assert hcm["common_http_protocol_options"] == {"idle_timeout": "60.000s"}
    assert hcm["stream_idle_timeout"] == "300.000s"
    policies = _retry_policies(b)
    assert policies and all(p["per_try_idle_timeout"] == p["per_try_timeout"] for p in policies)


def test_limits_follow_the_config_and_pass_envoy_validate(tmp_path):
    cfg = _demo(max_connections=50, idle_timeout_s=2.5, stream_idle_timeout_s=30)
    for m in cfg.models.values():
        m.per_try_idle_timeout_s = 7
    b = render.bootstrap(cfg)
    assert b["overload_manager"]["resource_monitors"][0]["typed_config"]["max_active_downstream_connections"] == 50
    assert _hcm(b)["common_http_protocol_options"]["idle_timeout"] == "2.500s"
    assert _hcm(b)["stream_idle_timeout"] == "30.000s"
    assert {p["per_try_idle_timeout"] for p in _retry_policies(b)} == {"7.000s"}
    assert_envoy_validates(cfg, tmp_path)


def test_a_sidegate_service_down_has_its_own_message_in_both_formats():
    mappers = _hcm(render.bootstrap(_demo()))["local_reply_config"]["mappers"]
    down = [m for m in mappers if "gateway service is unavailable" in m["body_format_override"]["text_format_source"]["inline_string"]]
    assert len(down) == 4  # Anthropic, Google and OpenAI shapes, and OpenAI's for a request without a path
    generic = [i for i, m in enumerate(mappers) if "Upstream unavailable" in m["body_format_override"]["text_format_source"]["inline_string"]]
    assert all(mappers.index(d) < generic[0] for d in down[:3])  # before the generic 503
    assert generic[2] < mappers.index(down[3]) < generic[3]  # the path-less ones come last, in the same order
    for m in down:
        expr = m["filter"]["and_filter"]["filters"][1]["extension_filter"]["typed_config"]["expression"]
        assert "ext_proc_error" in expr and "ext_authz_error" in expr and "direct_response" in expr
