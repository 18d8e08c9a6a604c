"""Shared pieces of the render tests: the bootstrap (tests/unit/test_render*.py) and the deploy
files (tests/unit/test_deploy_*.py)."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from sidegate import config, trust
from sidegate.bootstrap import render
from sidegate.config.services import ServicesConfig
from sidegate.supervisor import envoy_binary

TOKEN_FILE = ServicesConfig().internal_token_file
K8S_VERSIONS = ["1.30.0", "1.37.0"]  # oldest with native sidecars on by default (beta, 1.29+), newest bundled


def assert_envoy_validates(cfg: config.SidegateConfig, tmp_path: Path) -> Path:
    """Renders `cfg` to ``tmp_path/envoy.yaml`` and has Envoy itself check it (``--mode validate``:
    what only Envoy knows, e.g. a typed_config's fields); returns the rendered file."""
    cfg.services.internal_token_file = str(tmp_path / "token.yaml")  # Envoy checks that it exists
    trust.write_private(tmp_path / "token.yaml", trust.token_file_text(trust.generate()))
    f = tmp_path / "envoy.yaml"
    f.write_text(render.render_yaml(cfg))
    out = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(f), "--use-dynamic-base-id"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return f


def assert_envoy_validates_text(text: str, name: str) -> None:
    """`envoy --mode validate` of a rendered bootstrap, the internal token file it names (Envoy checks
    that it exists; in a pod it is written at start) pointed at a real one."""
    tmp = Path(tempfile.mkdtemp(prefix="sidegate-validate-"))
    token = tmp / "token.yaml"
    trust.write_private(token, trust.token_file_text(trust.generate()))
    path = tmp / name
    path.write_text(text.replace(TOKEN_FILE, str(token)))
    out = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--use-dynamic-base-id", "-l", "error"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, f"{name}: " + out.stdout[-2000:] + out.stderr[-2000:]


def assert_valid_kubernetes(res: dict[str, Any], where: str) -> None:
    """`res` is a valid object of its kind (strict: no unknown fields) for every Kubernetes version we support."""
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(res, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{where}: {res['kind']}/{res['metadata']['name']} invalid for {version}: {exc.message}")
