"""Every rendered bootstrap must pass `envoy --mode validate`."""

from importlib import resources

import pytest
import yaml
from render_helpers import assert_envoy_validates

from sidegate import config
from sidegate.bootstrap import render


def _demo() -> config.SidegateConfig:
    """The demo config behind the gRPC front with ext_authz (each test names the shape it checks)."""
    cfg = config.load(str(resources.files("sidegate") / "data" / "demo.yaml"), env={})
    cfg.services.auth, cfg.services.front = "ext_authz", "ext_proc"
    return cfg


def test_routes_and_clusters_follow_the_config():
    b = render.bootstrap(_demo())
    clusters = {c["name"] for c in b["static_resources"]["clusters"]}
    assert {"provider.openai", "provider.anthropic", "sidegate_authz", "sidegate_extproc"} <= clusters
    hcm = b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    assert [r["name"] for r in routes[:2]] == ["too-large.anthropic", "too-large"]
    assert all(r["direct_response"]["status"] == 413 for r in routes[:2])
    first = routes[2]
    assert first["match"]["headers"][0]["string_match"]["exact"] == "gpt-4o-mini"
    groups = first["route"]["inline_cluster_specifier_plugin"]["extension"]["typed_config"]["priority_groups"]
    assert [g["clusters"][0]["cluster_name"] for g in groups] == ["provider.openai", "provider.anthropic"]
    assert first["route"]["retry_policy"]["num_retries"] == 1
    names = [f["name"] for f in hcm["http_filters"]]
    assert names == ["sidegate.config_version", "envoy.filters.http.decompressor", "sidegate.inflated_limit", "envoy.filters.http.ext_authz", "sidegate.gateway", "sidegate.answer_limit",
                     "sidegate.direct_errors", "sidegate.usage", "envoy.filters.http.router"]


def test_inline_auth_has_no_ext_authz_filter():
    cfg = _demo()
    cfg.services.auth = "inline"
    hcm = render.bootstrap(cfg)["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["http_filters"][3]["name"] == "sidegate.gateway"  # (after config_version, decompressor, inflated_limit)
    assert "envoy.filters.http.ext_authz" not in [f["name"] for f in hcm["http_filters"]]


def test_http_front_replaces_the_gateway_ext_proc():
    cfg = _demo()
    cfg.services.auth, cfg.services.front, cfg.services.extproc_workers = "inline", "http", 2
    boot = render.bootstrap(cfg)
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    names = [f["name"] for f in hcm["http_filters"]]
    assert names[3] == "sidegate.front" and "sidegate.gateway" not in names
    svc = hcm["http_filters"][3]["typed_config"]["http_service"]
    assert svc["path_prefix"] == "/check" and svc["server_uri"]["cluster"] == "sidegate_front"
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    assert [r["name"] for r in routes[2:4]] == ["replay.0", "replay.1"]
    clusters = {c["name"]: c for c in boot["static_resources"]["clusters"]}
    ports = [e["endpoint"]["address"]["socket_address"]["port_value"]
             for e in clusters["sidegate_front"]["load_assignment"]["endpoints"][0]["lb_endpoints"]]  # fmt: skip
    assert ports == [cfg.services.front_port, cfg.services.front_port + 1]
    # the checks go to the worker with the fewest in flight (of all of them), not round robin;
    # a worker's own cluster (replays, a try's response) has nothing to balance
    assert clusters["sidegate_front"]["lb_policy"] == "LEAST_REQUEST"
    assert clusters["sidegate_front"]["least_request_lb_config"] == {"choice_count": 2}
    assert clusters["sidegate_extproc"]["lb_policy"] == "LEAST_REQUEST"
    assert "lb_policy" not in clusters["sidegate_front.1"]
    # replays skip the per-try ext_proc: the cluster's own upstream filters are the token and the codec
    opts = clusters["sidegate_front.1"]["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert [f["name"] for f in opts["http_filters"]] == ["envoy.filters.http.credential_injector", "envoy.filters.http.upstream_codec"]


def test_http_front_needs_inline_auth():
    with pytest.raises(config.ConfigError, match="auth: inline"):
        config.parse({"services": {"auth": "ext_authz", "front": "http"}, "providers": {"o": {"api": "openai", "base_url": "http://x"}},
                      "models": {"m": {"routes": [{"provider": "o"}]}}}, env={})  # fmt: skip


def test_https_provider_gets_verified_tls():
    cfg = config.parse(
        {
            "providers": {"oai": {"api": "openai", "base_url": "https://api.openai.com"}},
            "models": {"m": {"routes": [{"provider": "oai"}]}},
        },
        env={},
    )
    c = next(c for c in render.bootstrap(cfg)["static_resources"]["clusters"] if c["name"] == "provider.oai")
    tls = c["transport_socket"]["typed_config"]
    assert tls["sni"] == "api.openai.com"
    assert tls["common_tls_context"]["validation_context"]["trusted_ca"]["filename"]


@pytest.mark.parametrize(("https", "auth"), [(False, "ext_authz"), (True, "ext_authz"), (False, "inline"), (False, "front")])
def test_rendered_bootstrap_passes_envoy_validate(tmp_path, https, auth):
    cfg = _demo()
    cfg.services.auth = "inline" if auth == "front" else auth
    if auth == "front":
        cfg.services.front = "http"
        cfg.services.extproc_workers = 2
    if https:
        cfg.providers["openai"].base_url = "https://api.openai.com"
    yaml.safe_load(assert_envoy_validates(cfg, tmp_path).read_text())


def test_weight_zero_takes_no_first_tries_and_stays_a_fallback():
    """A canary at 100/0: the weight-0 route is its priority's fallback, never in the first group;
    its pinned route (an override names it) starts on it. A priority without a share is refused."""
    m = config.ModelConfig.model_validate({"routes": [{"provider": "a", "priority": 0, "weight": 100},
                                               {"provider": "b", "priority": 0, "weight": 0}, {"provider": "c"}],
                                    "policy": {"override_header": True}})  # fmt: skip
    assert [[r.provider for r in g] for g in m.groups()] == [["a"], ["b"], ["c"]]
    cfg = _demo().model_copy(update={
        "providers": {n: config.ProviderConfig(api="openai", base_url=f"http://{n}.test") for n in "abc"},
        "models": {"m": m}})  # fmt: skip
    hcm = render.bootstrap(cfg)["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    routes = {r["name"]: r for r in hcm["route_config"]["virtual_hosts"][0]["routes"]}

    def chain(name: str) -> list[list[tuple[str, int]]]:
        spec = routes[name]["route"]["inline_cluster_specifier_plugin"]["extension"]["typed_config"]
        return [[(c["cluster_name"], c["weight"]) for c in g["clusters"]] for g in spec["priority_groups"]]

    assert chain("model.m.0") == [[("provider.a", 100)], [("provider.b", 1)], [("provider.c", 1)]]
    assert chain("model.m@b")[0] == [("provider.b", 1)]
    with pytest.raises(ValueError, match="all have weight 0"):
        config.ModelConfig.model_validate({"routes": [{"provider": "a", "weight": 0}]})
