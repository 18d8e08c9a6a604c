"""observability.tracing: off by default, validated, overridable from the environment."""

import pytest

from sidegate import config

BASE = {
    "providers": {"oai": {"api": "openai", "base_url": "https://api.openai.com", "api_key_env": "K"}},
    "models": {"gpt-4o": {"routes": [{"provider": "oai"}]}},
}


def _parse(tracing: dict | None = None, env: dict[str, str] | None = None) -> config.SidegateConfig:
    data = dict(BASE)
    if tracing is not None:
        data["observability"] = {"tracing": tracing}
    return config.parse(data, env=env or {})


def test_tracing_is_off_and_offline_by_default():
    t = _parse().observability.tracing
    assert t.endpoint is None and not t.enabled
    assert t.sample_ratio == 1.0 and t.service_name == "sidegate" and t.content_tenants == []
    assert not t.records_content("acme")


@pytest.mark.parametrize(
    ("given", "endpoint", "host", "port"),
    [
        ("otel:4317", "otel:4317", "otel", 4317),
        ("http://127.0.0.1:4317/", "127.0.0.1:4317", "127.0.0.1", 4317),
        ("[::1]:4317", "[::1]:4317", "::1", 4317),
    ],
)
def test_endpoint_is_host_and_port(given, endpoint, host, port):
    t = _parse({"endpoint": given}).observability.tracing
    assert t.enabled and (t.endpoint, t.host, t.port) == (endpoint, host, port)


@pytest.mark.parametrize("bad", ["otel", "otel:0", "otel:99999", "https://otel:4317", "a b:1", ":4317"])
def test_a_bad_endpoint_is_refused_with_its_location(bad):
    with pytest.raises(config.ConfigError, match=r"observability\.tracing\.endpoint"):
        _parse({"endpoint": bad})


def test_sample_ratio_is_a_share_and_content_names_tenants():
    with pytest.raises(config.ConfigError, match="sample_ratio"):
        _parse({"sample_ratio": 1.5})
    with pytest.raises(config.ConfigError, match="content_tenants"):
        _parse({"content_tenants": ["no spaces"]})
    with pytest.raises(config.ConfigError, match=r"tracing\.sampler: Extra inputs"):
        _parse({"sampler": "always"})
    t = _parse({"content_tenants": ["acme"]}).observability.tracing
    assert t.records_content("acme") and not t.records_content("other") and not t.records_content(None)
    assert _parse({"content_tenants": ["*"]}).observability.tracing.records_content("anyone")


def test_environment_overrides_tracing():
    env = {
        "SIDEGATE_OTLP_ENDPOINT": "collector:4317",
        "SIDEGATE_TRACE_SAMPLE_RATIO": "0.01",
        "SIDEGATE_TRACE_SERVICE_NAME": "gw-eu",
    }
    t = _parse({"content_tenants": ["acme"]}, env=env).observability.tracing
    assert (t.endpoint, t.sample_ratio, t.service_name, t.content_tenants) == (
        "collector:4317",
        0.01,
        "gw-eu",
        ["acme"],
    )
    # An empty variable (a compose default) switches a configured endpoint off.
    assert not _parse(
        {"endpoint": "otel:4317"}, env={"SIDEGATE_OTLP_ENDPOINT": ""}
    ).observability.tracing.enabled
