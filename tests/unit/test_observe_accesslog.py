"""The Envoy JSON access log config: carries identity from metadata, never credential headers, and
Envoy itself accepts it (``envoy --mode validate`` on a real rendered bootstrap)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from sidegate import config as config_mod
from sidegate import trust
from sidegate.bootstrap import accesslog, render
from sidegate.supervisor import envoy_binary

CFG = config_mod.parse(
    {
        "providers": {"openai": {"api": "openai", "base_url": "http://127.0.0.1:18081"}},
        "models": {"gpt-4o-mini": {"routes": [{"provider": "openai"}]}},
    },
    env={},
)


def test_format_has_identity_and_no_credentials() -> None:
    fmt = accesslog.FORMAT
    assert fmt["tenant"] == "%DYNAMIC_METADATA(envoy.filters.http.ext_authz:tenant)%"
    assert fmt["model"] == "%DYNAMIC_METADATA(sidegate:model)%"
    assert fmt["attempts"] == "%UPSTREAM_REQUEST_ATTEMPT_COUNT%"
    for key in ("request_id", "status", "duration_ms", "response_flags", "upstream_cluster", "provider"):
        assert key in fmt
    text = yaml.safe_dump(accesslog.access_log("/tmp/x.log")).lower()
    for header in accesslog.FORBIDDEN_HEADERS:
        assert f"req({header})" not in text and f"resp({header})" not in text
    assert "%req(:path)%" not in text  # query strings may carry keys: REQ_WITHOUT_QUERY only


def test_stdout_and_file_variants() -> None:
    assert accesslog.access_log()[0]["name"] == "envoy.access_loggers.stdout"
    assert accesslog.access_log("-")[0]["name"] == "envoy.access_loggers.stdout"
    file_log = accesslog.access_log("/var/log/sidegate/access.log")[0]
    assert file_log["typed_config"]["path"] == "/var/log/sidegate/access.log"


@pytest.mark.parametrize("path", [None, "access.log"])
def test_envoy_validates_bootstrap_with_access_log(tmp_path: Path, path: str | None) -> None:
    trust.write_private(tmp_path / "token.yaml", trust.token_file_text(trust.generate()))  # Envoy checks it exists
    cfg = CFG.model_copy(update={"services": CFG.services.model_copy(update={"internal_token_file": str(tmp_path / "token.yaml")})})
    boot = accesslog.add_to_bootstrap(render.bootstrap(cfg), str(tmp_path / path) if path else None)
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["access_log"]
    cfg_file = tmp_path / "envoy.yaml"
    cfg_file.write_text(yaml.safe_dump(boot))
    r = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(cfg_file), "-l", "error"],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
