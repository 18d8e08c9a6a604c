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
    assert {"envoy", "authz", "extproc", "dragonfly", "qdrant", "prometheus", "grafana", "fakes"} <= set(
        SERVICES
    )
    for name, svc in SERVICES.items():
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no health check"
    assert SERVICES["fakes"]["profiles"] == ["demo"]
    assert all("profiles" not in s for n, s in SERVICES.items() if n != "fakes")


@pytest.mark.parametrize("name", ["dragonfly", "qdrant", "prometheus", "grafana"])
def test_third_party_images_are_pinned(name):
    image = SERVICES[name]["image"]
    assert re.search(r":v?\d+\.\d+\.\d+$", image), image
    if name == "dragonfly":
        assert image.startswith("docker.dragonflydb.io/dragonflydb/dragonfly:")
    if name == "qdrant":
        assert image.startswith("qdrant/qdrant:")


def test_services_share_envoys_network_and_run_the_sidegate_commands():
    cfg_path = "/etc/sidegate/sidegate.yaml"
    assert SERVICES["authz"]["command"] == ["serve", "authz", "-c", cfg_path]
    assert SERVICES["extproc"]["command"] == ["serve", "extproc", "-c", cfg_path]
    assert SERVICES["envoy"]["entrypoint"] == ["envoy"]
    assert SERVICES["envoy"]["command"][:2] == ["-c", "/etc/sidegate/envoy.yaml"]
    for name in ("authz", "extproc"):
        assert SERVICES[name]["network_mode"] == "service:envoy"
        assert SERVICES[name]["environment"]["SIDEGATE_REDIS_URL"] == "redis://dragonfly:6379/0"
        assert SERVICES[name]["depends_on"]["dragonfly"]["condition"] == "service_healthy"
    assert SERVICES["extproc"]["environment"]["SIDEGATE_QDRANT_URL"] == "http://qdrant:6333"


def test_envoy_and_the_services_share_the_internal_token_and_nothing_else_does():
    cfg = config.load(ROOT / "deploy/compose/sidegate.yaml", env={})
    token_dir = str(Path(cfg.services.internal_token_file).parent)
    writer = SERVICES["internal-token"]
    assert writer["command"] == ["internal-token", "-o", cfg.services.internal_token_file, "--keep"]
    assert writer["restart"] == "no" and writer["volumes"] == [f"sidegate-internal:{token_dir}"]
    readers = {n for n, svc in SERVICES.items() if any(v.startswith("sidegate-internal:") for v in svc.get("volumes", []))}
    assert readers == {"internal-token", "envoy", "authz", "extproc"}
    for name in ("envoy", "authz", "extproc"):
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
    # The gRPC services share envoy's network namespace: loopback is enough.
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
    authz_metrics = getattr(cfg.services, "authz_metrics_port", cfg.services.metrics_port + 1)
    assert {f"envoy:{cfg.services.metrics_port}", f"envoy:{authz_metrics}"} <= targets
