"""Where the Envoy bootstrap's pieces live: the runtime never imports the renderer, the renderer's
modules import each other without a cycle, and every Lua program Envoy runs is a file in lua/
that the wheel and the image ship."""

from __future__ import annotations

import ast
import fnmatch
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from sidegate import config, lua
from sidegate.bootstrap import render

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = "sidegate.bootstrap"
MAY_IMPORT_BOOTSTRAP = {"sidegate/cli.py", "sidegate/supervisor/children.py", "sidegate/xds/resources.py"}
"""Process-level code that renders the bootstrap (besides the bootstrap's own modules): the CLI,
`sidegate up`'s children and the xDS server's snapshots."""


def _sources(*tops: str) -> list[Path]:
    return sorted(p for top in tops for p in (ROOT / top).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """Every module `path` imports (`from a import b` counts as `a` and `a.b`)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def test_runtime_code_never_imports_the_bootstrap():
    offenders = []
    for path in _sources("sidegate", "authz", "extproc"):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("sidegate/bootstrap/") or rel in MAY_IMPORT_BOOTSTRAP:
            continue
        bad = sorted(m for m in _imports(path) if m == BOOTSTRAP or m.startswith(BOOTSTRAP + "."))
        if bad:
            offenders.append(f"{rel}: {', '.join(bad)}")
    assert not offenders, offenders


def test_the_services_load_without_the_bootstrap():
    """Also through what they import in turn (a fresh interpreter: this one has it loaded)."""
    code = (
        "import sys, authz.service, extproc.main, sidegate.app\n"
        f"print(sorted(m for m in sys.modules if m.startswith('{BOOTSTRAP}')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_the_bootstrap_modules_import_each_other_without_a_cycle():
    graph = {
        _module(p): {m for m in _imports(p) if m.startswith(BOOTSTRAP + ".")}
        for p in _sources("sidegate/bootstrap")
    }
    graph = {mod: {m for m in deps if m in graph} for mod, deps in graph.items()}
    done: set[str] = set()

    def visit(mod: str, path: tuple[str, ...]) -> None:
        assert mod not in path, " -> ".join((*path, mod))
        if mod in done:
            return
        for dep in graph[mod]:
            visit(dep, (*path, mod))
        done.add(mod)

    for mod in graph:
        visit(mod, ())


LUA_SIGNS = ("function envoy_on_", "local function ", "h:streamInfo()")


def test_no_lua_program_is_left_in_a_python_string():
    found = []
    for path in _sources("sidegate", "authz", "extproc"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            text = node.value if isinstance(node, ast.Constant) else None
            if isinstance(text, str) and any(sign in text for sign in LUA_SIGNS):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, found


def _full_config() -> config.SidegateConfig:
    """Every lane on: the HTTP front (try lane) and the direct lane."""
    return config.parse({
        "services": {"auth": "inline", "front": "http", "direct_lane": True},
        "providers": {
            "openai": {"api": "openai", "base_url": "https://api.openai.com", "api_key_env": "OPENAI_API_KEY"},
            "anthropic": {"api": "anthropic", "base_url": "https://api.anthropic.com", "api_key_env": "ANTHROPIC_API_KEY"},
        },
        "models": {"gpt-4o-mini": {"routes": [{"provider": "openai"}]}, "claude": {"routes": [{"provider": "anthropic"}]}},
    }, env={"OPENAI_API_KEY": "sk-o", "ANTHROPIC_API_KEY": "sk-a"})  # fmt: skip


def _lua_sources(node: object) -> list[str]:
    """The inline Lua of every Lua filter in a rendered bootstrap."""
    if isinstance(node, dict):
        if str(node.get("@type", "")).endswith("filters.http.lua.v3.Lua"):
            return [node["default_source_code"]["inline_string"]]
        return [s for v in node.values() for s in _lua_sources(v)]
    if isinstance(node, list):
        return [s for v in node for s in _lua_sources(v)]
    return []


def test_the_bootstrap_reads_its_lua_from_files_the_wheel_and_the_image_ship(monkeypatch: pytest.MonkeyPatch):
    read: list[str] = []
    real = lua.read

    def recording(name: str) -> str:
        read.append(name)
        return real(name)

    monkeypatch.setattr(lua, "read", recording)
    boot = render.bootstrap(_full_config())
    assert set(read) == {"envoy_direct_errors.lua", "envoy_stream_watch.lua", "envoy_try_lane.lua", "envoy_whole_answer.lua"}
    data_files = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    shipped = data_files["share/sidegate/lua"]
    for name in read:
        assert (ROOT / "lua" / name).is_file(), name
        assert any(fnmatch.fnmatch(f"lua/{name}", pattern) for pattern in shipped), name
    sources = _lua_sources(boot)
    assert len(sources) == 1 + 1 + 2  # whole answer, direct errors, one try filter per provider
    for source in sources:
        assert "$" not in source, "a placeholder was left unfilled"
        assert source.startswith("-- lua/envoy_"), "its first line names its file"


def test_lua_dir_in_an_installed_layout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A wheel puts the programs under <prefix>/share/sidegate/lua, beside no repository."""
    monkeypatch.delenv("SIDEGATE_LUA_DIR", raising=False)
    monkeypatch.setattr(lua, "__file__", str(tmp_path / "lib" / "site-packages" / "sidegate" / "lua.py"))
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    assert lua.lua_dir() == tmp_path / "share" / "sidegate" / "lua"
    monkeypatch.setenv("SIDEGATE_LUA_DIR", "/opt/sidegate/lua")  # the image's
    assert lua.lua_dir() == Path("/opt/sidegate/lua")
