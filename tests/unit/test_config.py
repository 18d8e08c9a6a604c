import textwrap

import pytest

from sidegate import config

BASE = {
    "providers": {"oai": {"api": "openai", "base_url": "https://api.openai.com", "api_key_env": "K"}},
    "models": {"gpt-4o": {"routes": [{"provider": "oai"}]}},
}


def test_minimal_config_defaults():
    cfg = config.parse(dict(BASE), env={})
    assert cfg.listener.port == 8080
    p = cfg.providers["oai"]
    assert p.tls and p.port == 443 and p.host == "api.openai.com" and p.auth_style == "bearer"
    assert cfg.store.url is None


def test_env_overrides_store_url_and_ports():
    cfg = config.parse(dict(BASE), env={"SIDEGATE_REDIS_URL": "redis://h:1/0", "SIDEGATE_LISTEN_PORT": "9999"})
    assert cfg.store.url == "redis://h:1/0"
    assert cfg.listener.port == 9999


def test_errors_carry_their_location():
    data = {
        "providers": {"oai": {"api": "openai", "base_url": "ftp://x"}},
        "models": {"m": {"routes": [{"provider": "nope"}]}},
    }
    with pytest.raises(config.ConfigError) as exc:
        config.parse(data, env={})
    assert any(p.startswith("providers.oai.base_url:") for p in exc.value.problems)


def test_unknown_provider_reference_is_reported():
    data = {**BASE, "models": {"m": {"routes": [{"provider": "nope"}]}}}
    with pytest.raises(config.ConfigError) as exc:
        config.parse(data, env={})
    assert "models.m.routes.0.provider: unknown provider 'nope'" in str(exc.value)


def test_unknown_field_is_rejected():
    with pytest.raises(config.ConfigError) as exc:
        config.parse({**BASE, "listner": {}}, env={})
    assert "listner" in str(exc.value)


def test_bad_key_hash_rejected():
    data = {**BASE, "tenants": {"t": {"keys": [{"id": "abcdefgh", "hash": "plaintext"}]}}}
    with pytest.raises(config.ConfigError) as exc:
        config.parse(data, env={})
    assert "tenants.t.keys.0.hash" in str(exc.value)


def test_provider_twice_in_chain_rejected():
    data = {**BASE, "models": {"m": {"routes": [{"provider": "oai"}, {"provider": "oai"}]}}}
    with pytest.raises(config.ConfigError):
        config.parse(data, env={})


def test_yaml_syntax_error_has_line(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(textwrap.dedent("""
        providers:
          oai: {api: openai, base_url: [
    """))
    with pytest.raises(config.ConfigError) as exc:
        config.load(f, env={})
    assert "line" in str(exc.value)


def test_packaged_demo_config_is_valid():
    from importlib import resources

    cfg = config.load(str(resources.files("sidegate") / "data" / "demo.yaml"), env={})
    assert "gpt-4o-mini" in cfg.models and cfg.tenants["demo"].keys


def test_envoy_concurrency_leaves_the_python_services_their_cores(monkeypatch):
    from sidegate.supervisor import envoy_concurrency

    monkeypatch.setattr("sidegate.supervisor.usable_cpus", lambda: 8)
    base = dict(BASE)
    cfg = config.parse({**base, "services": {"auth": "ext_authz", "extproc_workers": 2, "authz_workers": 1}})
    assert envoy_concurrency(cfg, {}) == 5  # 8 CPUs - 3 Python processes
    cfg = config.parse({**base, "services": {"auth": "inline", "extproc_workers": 2}})
    assert envoy_concurrency(cfg, {}) == 6  # no separate authz process
    monkeypatch.setattr("sidegate.supervisor.usable_cpus", lambda: 2)
    assert envoy_concurrency(cfg, {}) == 1  # never below one worker
    cfg = config.parse({**base, "services": {"envoy_concurrency": 3}})
    assert envoy_concurrency(cfg, {}) == 3
    assert envoy_concurrency(cfg, {"SIDEGATE_ENVOY_CONCURRENCY": "2"}) == 2  # the environment wins
    assert envoy_concurrency(cfg, {"SIDEGATE_ENVOY_CONCURRENCY": "0"}) == 3  # 0: as if unset
    with pytest.raises(ValueError, match="whole number"):
        envoy_concurrency(cfg, {"SIDEGATE_ENVOY_CONCURRENCY": "two"})


def test_extproc_workers_auto_takes_one_per_two_cpus(monkeypatch):
    """`extproc_workers: 0`: half the usable CPUs (Envoy's auto concurrency takes the other half),
    at least one; an explicit count stays as it is."""
    from sidegate.supervisor import envoy_concurrency

    for cpus, workers, envoy in ((1, 1, 1), (2, 1, 1), (3, 1, 2), (4, 2, 2), (8, 4, 4), (64, 32, 32)):
        monkeypatch.setattr("sidegate.config.services.usable_cpus", lambda cpus=cpus: cpus)
        monkeypatch.setattr("sidegate.supervisor.usable_cpus", lambda cpus=cpus: cpus)
        cfg = config.parse({**BASE, "services": {"auth": "inline", "extproc_workers": 0}})
        assert (cfg.services.extproc_workers, envoy_concurrency(cfg, {})) == (workers, envoy)
    assert config.parse({**BASE, "services": {"extproc_workers": 3}}).services.extproc_workers == 3
    assert config.parse(dict(BASE)).services.extproc_workers == 1  # the default is unchanged


def test_usable_cpus_honour_a_cgroup_cpu_limit(monkeypatch):
    from pathlib import Path

    from sidegate import supervisor

    files = {"/sys/fs/cgroup/cpu.max": "150000 100000\n"}

    def read_text(self, *a, **k):
        if str(self) in files:
            return files[str(self)]
        raise FileNotFoundError(str(self))

    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: set(range(32)))
    monkeypatch.setattr(Path, "read_text", read_text)
    assert supervisor.usable_cpus() == 2  # 1.5 CPUs of quota, rounded up
    files["/sys/fs/cgroup/cpu.max"] = "max 100000\n"
    assert supervisor.usable_cpus() == 32
    del files["/sys/fs/cgroup/cpu.max"]
    files |= {"/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "400000\n", "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n"}
    assert supervisor.usable_cpus() == 4  # cgroup v1


def test_every_config_model_is_importable_from_the_package() -> None:
    """Code that reads a config imports its models from the package (`from sidegate.config import
    StoreConfig`), whichever section module defines them."""
    names = (
        "NEVER_FORWARDED", "NEVER_FORWARDED_PREFIXES", "AuthStyle", "BreakerConfig", "CachePolicy", "ConfigError",
        "GuardPolicy", "KeyConfig", "ListenerConfig", "ModelConfig", "ObservabilityConfig", "ProviderConfig",
        "QuotaPolicy", "RouteConfig", "RouteDefaults", "SemanticSettings", "ServicesConfig", "SidegateConfig",
        "StoreConfig", "TenantConfig", "TenantQuota", "WeightedKey", "load", "local_address", "parse",
    )  # fmt: skip
    missing = [n for n in names if not hasattr(config, n)]
    assert not missing, missing
    assert set(names) <= set(config.__all__)
