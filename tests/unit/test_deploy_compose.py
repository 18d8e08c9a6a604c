"""docker-compose.yml: valid against the Compose Specification JSON schema (the copy vendored in the
PyPI package `check-jsonschema`), pinned images, health checks, and consistent with its configs."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from sidegate import config

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def _schema() -> dict:
    text = (resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text()
    return json.loads(text)


def _errors(doc: dict) -> list[str]:
    schema = _schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(doc)]


def test_compose_file_matches_the_compose_spec_schema():
    assert _errors(COMPOSE) == []


def test_schema_check_catches_mistakes():
    bad = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    bad["services"]["envoy"]["helthcheck"] = {}
    assert _errors(bad)


def test_stack_has_every_part_with_a_health_check():
    assert {"envoy", "extproc", "dragonfly", "qdrant", "prometheus", "grafana", "fakes", "ledger",
            "clickhouse", "otel-collector"} <= set(SERVICES)  # fmt: skip
    for name, svc in SERVICES.items():
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no health check"
    assert SERVICES["fakes"]["profiles"] == ["demo"]
    assert all("profiles" not in s for n, s in SERVICES.items() if n != "fakes")


@pytest.mark.parametrize(
    "name", ["dragonfly", "qdrant", "prometheus", "grafana", "clickhouse", "otel-collector"]
)
def test_third_party_images_are_pinned(name):
    image = SERVICES[name]["image"]
    # ClickHouse tags its releases with four numbers (25.8.8.26).
    assert re.search(r":v?\d+\.\d+\.\d+(\.\d+)?$", image), image
    if name == "clickhouse":
        assert image.startswith("clickhouse/clickhouse-server:")
    if name == "otel-collector":
        assert image.startswith("otel/opentelemetry-collector:")
    if name == "dragonfly":
        assert image.startswith("docker.dragonflydb.io/dragonflydb/dragonfly:")
    if name == "qdrant":
        assert image.startswith("qdrant/qdrant:")


def test_services_share_envoys_network_and_run_the_sidegate_commands():
    cfg_path = "/etc/sidegate/sidegate.yaml"
    assert SERVICES["extproc"]["command"] == ["serve", "extproc", "-c", cfg_path]
    assert SERVICES["envoy"]["entrypoint"] == ["envoy"]
    assert SERVICES["envoy"]["command"][:2] == ["-c", "/etc/sidegate/envoy.yaml"]
    assert SERVICES["extproc"]["network_mode"] == "service:envoy"
    assert SERVICES["extproc"]["environment"]["SIDEGATE_REDIS_URL"] == "redis://dragonfly:6379/0"
    assert SERVICES["extproc"]["depends_on"]["dragonfly"]["condition"] == "service_healthy"
    assert SERVICES["extproc"]["environment"]["SIDEGATE_QDRANT_URL"] == "http://qdrant:6333"


def test_the_http_front_with_inline_auth_needs_no_authz_service():
    """The default front (docs/architecture.md, "Two fronts"): extproc checks the tenant keys, Envoy's
    ext_authz HTTP filter posts to extproc's front on loopback, and Envoy itself injects the provider
    keys on the direct and try lanes, so it needs every provider key variable extproc has."""
    cfg = _cfg()
    assert (cfg.services.front, cfg.services.auth) == ("http", "inline")
    assert "authz" not in SERVICES
    assert not any("authz" in " ".join(map(str, s.get("command", []))) for s in SERVICES.values())
    assert cfg.services.host == "127.0.0.1" and cfg.services.front_port == 9004
    # nothing publishes the front (or any extproc) port: only envoy's listener, on its own port
    published = [p for s in SERVICES.values() for p in s.get("ports", [])]
    assert not any(p.rsplit(":", 1)[-1] in {str(cfg.services.front_port), str(cfg.services.extproc_port)} for p in published)
    bootstrap = yaml.safe_load((ROOT / "deploy/compose/envoy.yaml").read_text())
    clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}
    front = clusters["sidegate_front"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert front["socket_address"] == {"address": "127.0.0.1", "port_value": cfg.services.front_port}
    assert any(name.endswith("~try") for name in clusters)
    env = SERVICES["envoy"]["environment"]
    for p in cfg.providers.values():
        assert p.api_key_env in env and env[p.api_key_env] == SERVICES["extproc"]["environment"][p.api_key_env]


def test_envoy_and_the_services_share_the_internal_token_and_nothing_else_does():
    cfg = config.load(ROOT / "deploy/compose/sidegate.yaml", env={})
    token_dir = str(Path(cfg.services.internal_token_file).parent)
    writer = SERVICES["internal-token"]
    assert writer["command"] == ["internal-token", "-o", cfg.services.internal_token_file, "--keep"]
    assert writer["restart"] == "no" and writer["volumes"] == [f"sidegate-internal:{token_dir}"]
    readers = {
        n
        for n, svc in SERVICES.items()
        if any(v.startswith("sidegate-internal:") for v in svc.get("volumes", []))
    }
    assert readers == {"internal-token", "envoy", "extproc"}
    for name in ("envoy", "extproc"):
        assert f"sidegate-internal:{token_dir}:ro" in SERVICES[name]["volumes"]
    assert SERVICES["envoy"]["depends_on"]["internal-token"]["condition"] == "service_completed_successfully"
    assert "sidegate-internal" in COMPOSE["volumes"]


def test_mounted_files_exist_and_the_config_matches_the_stack():
    for svc in SERVICES.values():
        for vol in svc.get("volumes", []):
            src = vol.split(":", 1)[0]
            if src.startswith("./"):
                assert (ROOT / src).exists(), src
    cfg = config.load(ROOT / "deploy/compose/sidegate.yaml", env={})
    # Envoy must listen on all interfaces inside its container for the published port to work.
    assert cfg.listener.host == "0.0.0.0"
    published = SERVICES["envoy"]["ports"][0]
    assert published.endswith(f":{cfg.listener.port}")
    # extproc shares envoy's network namespace: loopback is enough for its front and gRPC ports.
    assert cfg.services.host == "127.0.0.1"
    # Demo providers point at the fakes service, on the ports it listens on, with keys extproc gets.
    fake_cmd = SERVICES["fakes"]["command"]
    fake_ports = {int(fake_cmd[i + 1]) for i, a in enumerate(fake_cmd) if a == "--port"}
    assert fake_cmd[fake_cmd.index("--host") + 1] == "0.0.0.0"
    for p in cfg.providers.values():
        assert urlsplit(p.base_url).hostname == "fakes" and p.port in fake_ports
        assert p.api_key_env in SERVICES["extproc"]["environment"]
    prom = yaml.safe_load((ROOT / "deploy/compose/prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert f"envoy:{cfg.services.metrics_port}" in targets
    assert not any(job["job_name"] == "sidegate-authz" for job in prom["scrape_configs"])  # no authz service


def _cfg() -> config.SidegateConfig:
    return config.load(ROOT / "deploy/compose/sidegate.yaml", env={})


def test_ledger_runner_ships_to_the_clickhouse_service_with_credentials_from_env():
    cfg = _cfg()
    ship = cfg.observability.ledger_ship
    runner = SERVICES["ledger"]
    assert runner["command"] == ["ledger", "run", "-c", "/etc/sidegate/sidegate.yaml", "--create-tables"]
    assert runner["environment"]["SIDEGATE_REDIS_URL"] == "redis://dragonfly:6379/0"
    assert runner["depends_on"]["clickhouse"]["condition"] == "service_healthy"
    assert runner["depends_on"]["dragonfly"]["condition"] == "service_healthy"
    assert f"{cfg.observability.ledger_metrics_port}/metrics" in " ".join(runner["healthcheck"]["test"])
    # The shipper talks to the clickhouse service's HTTP port with the user the image creates.
    url = urlsplit(ship.url or "")
    assert (url.scheme, url.hostname, url.port) == ("http", "clickhouse", 8123)
    ch = SERVICES["clickhouse"]["environment"]
    assert ship.user_env and ship.password_env
    for var, ch_var in ((ship.user_env, "CLICKHOUSE_USER"), (ship.password_env, "CLICKHOUSE_PASSWORD")):
        assert runner["environment"][var] == ch[ch_var]  # the same ${...} default on both sides
    assert "clickhouse-data" in COMPOSE["volumes"]
    assert "sidegate-internal:/run/sidegate:ro" not in runner.get("volumes", [])


def test_prometheus_scrapes_the_ledger_runner_and_metrics_listen_beyond_loopback():
    cfg = _cfg()
    assert cfg.services.metrics_host == "0.0.0.0"  # Prometheus scrapes from its own container
    prom = yaml.safe_load((ROOT / "deploy/compose/prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert f"ledger:{cfg.observability.ledger_metrics_port}" in targets


def test_spill_dir_is_a_named_volume_of_extproc():
    spill = _cfg().observability.ledger_spill.dir
    assert spill and spill.startswith("/var/lib/sidegate/")
    assert f"ledger-spill:{spill}" in SERVICES["extproc"]["volumes"]
    assert "ledger-spill" in COMPOSE["volumes"]
    # The image creates the directory owned by its user: a fresh named volume copies that ownership.
    assert spill in (ROOT / "Dockerfile").read_text()


def test_traces_go_to_the_collector_service_and_envoy_is_rendered_with_its_tracer():
    cfg = _cfg()
    tracing = cfg.observability.tracing
    assert tracing.enabled and (tracing.host, tracing.port) == ("otel-collector", 4317)
    collector = SERVICES["otel-collector"]
    cfg_file = next(v.split(":")[0] for v in collector["volumes"] if v.startswith("./"))
    assert collector["command"] == [f"--config={collector['volumes'][0].split(':')[1]}"]
    otel = yaml.safe_load((ROOT / cfg_file).read_text())
    grpc = otel["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert grpc == f"0.0.0.0:{tracing.port}"
    assert otel["service"]["pipelines"]["traces"] == {
        "receivers": ["otlp"],
        "processors": ["batch"],
        "exporters": ["debug"],
    }
    bootstrap = yaml.safe_load((ROOT / "deploy/compose/envoy.yaml").read_text())
    clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}
    addr = clusters["otel_collector"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"][
        "address"
    ]
    assert addr["socket_address"] == {"address": "otel-collector", "port_value": 4317}
    assert "envoy.tracers.opentelemetry" in (ROOT / "deploy/compose/envoy.yaml").read_text()


def test_grafana_provisions_the_shared_dashboard():
    vols = SERVICES["grafana"]["volumes"]
    assert "./k8s/grafana/sidegate-dashboard.json:/etc/grafana/dashboards/sidegate.json:ro" in vols
    prov = yaml.safe_load((ROOT / "deploy/compose/grafana/dashboards.yml").read_text())
    assert prov["providers"][0]["options"]["path"] == "/etc/grafana/dashboards"
