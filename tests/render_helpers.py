"""Shared pieces of the bootstrap render tests (tests/unit/test_render*.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from sidegate import config, trust
from sidegate.bootstrap import render
from sidegate.supervisor import envoy_binary


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
