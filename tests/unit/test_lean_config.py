"""`services.grpc_server`: validated, overridden by SIDEGATE_GRPC_SERVER, and rendered as a cluster
of its own for both ext_proc filters (the access log stays on grpc.aio's)."""

from importlib import resources
from pathlib import Path

import pytest
from render_helpers import assert_envoy_validates

from sidegate import config
from sidegate.bootstrap import render
from sidegate.bootstrap.clusters import LEAN_CLUSTER


def _cfg(env: dict[str, str]) -> config.SidegateConfig:
    cfg = config.load(str(resources.files("sidegate") / "data" / "demo.yaml"), env=env)
    cfg.services.auth, cfg.services.front, cfg.services.extproc_workers = "inline", "ext_proc", 2
    return cfg


def test_the_default_is_grpcio_and_the_env_picks_lean():
    assert _cfg({}).services.grpc_server == "grpcio"
    cfg = _cfg({"SIDEGATE_GRPC_SERVER": "lean", "SIDEGATE_LEAN_PORT": "9110"})
    assert cfg.services.grpc_server == "lean" and cfg.services.lean_port == 9110


def test_an_unknown_server_is_refused():
    with pytest.raises(config.ConfigError, match=r"services\.grpc_server"):
        config.parse({"services": {"grpc_server": "h2"}}, env={})


def _filters(boot: dict) -> dict:
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return {f["name"]: f for f in hcm["http_filters"]}


def test_lean_renders_its_cluster_for_both_ext_proc_filters(tmp_path: Path) -> None:
    cfg = _cfg({"SIDEGATE_GRPC_SERVER": "lean"})
    cfg.services.direct_lane = False
    boot = render.bootstrap(cfg)
    clusters = {c["name"]: c for c in boot["static_resources"]["clusters"]}
    ports = [e["endpoint"]["address"]["socket_address"]["port_value"]
             for e in clusters[LEAN_CLUSTER]["load_assignment"]["endpoints"][0]["lb_endpoints"]]  # fmt: skip
    assert ports == [cfg.services.lean_port, cfg.services.lean_port + 1]
    assert "sidegate_extproc" in clusters  # the access log and health stay on grpc.aio
    gateway = _filters(boot)["sidegate.gateway"]["typed_config"]
    assert gateway["grpc_service"]["envoy_grpc"]["cluster_name"] == LEAN_CLUSTER
    assert f"'cluster_name': '{LEAN_CLUSTER}'" in repr(_filters(boot)["envoy.filters.http.router"])
    assert LEAN_CLUSTER not in repr(render.bootstrap(_cfg({})))
    assert_envoy_validates(cfg, tmp_path)
