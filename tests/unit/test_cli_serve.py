"""`sidegate serve X` becomes the adapter's own entry point, `python -P -m X -c F`, in the same
process (the library never imports the adapters; the PID a container or supervisor holds stays)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sidegate import cli


@pytest.mark.parametrize("service", ["authz", "extproc"])
def test_serve_execs_the_adapters_entry_point(monkeypatch, service):
    calls = []

    def execv(path, argv):
        calls.append((path, argv))
        raise SystemExit(0)

    monkeypatch.setattr(cli.os, "execv", execv)
    with pytest.raises(SystemExit):
        cli.main(["serve", service, "-c", "sidegate.yaml"])
    assert calls == [(sys.executable, [sys.executable, "-P", "-m", service, "-c", "sidegate.yaml"])]


@pytest.mark.parametrize("service", ["authz", "extproc"])
def test_a_bad_config_is_reported_by_the_service(tmp_path, service):
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers: {p: {api: nope, base_url: 'http://x'}}\nmodels: {}\n")
    out = subprocess.run([sys.executable, "-P", "-m", service, "-c", str(bad)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "invalid configuration" in out.stderr
