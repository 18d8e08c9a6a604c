"""The house rules, checked: no import cycles anywhere in the library and its adapters, and the
import-linter contracts in pyproject.toml (layers, forbidden imports) hold.

The cycle check reads the source with `ast`, so it sees every import Python could run: module
level, inside functions, and under ``if TYPE_CHECKING:`` (a cycle that only type checkers walk
today becomes a runtime one the day someone drops the guard). The last tests plant a cycle and an
upward import in a throwaway package and prove that both checks catch them, so a check that
silently stopped seeing anything cannot pass."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("sidegate", "authz", "extproc")

Graph = dict[str, dict[str, str]]
"""importer -> {imported: "path:line" of the first import}."""


def _modules(root: Path, packages: Iterable[str]) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package's __init__)."""
    found: dict[str, tuple[Path, bool]] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            found[".".join(parts)] = (path, is_package)
    return found


def import_graph(root: Path, packages: Iterable[str]) -> Graph:
    """Which of the packages' modules each module imports. `from a import b` counts as importing
    the module a.b when there is one, else a (a name defined in a's __init__)."""
    modules = _modules(root, packages)

    def known(name: str) -> str | None:
        parts = name.split(".")
        while parts:
            candidate = ".".join(parts)
            if candidate in modules:
                return candidate
            parts.pop()
        return None

    graph: Graph = {}
    for name, (path, is_package) in modules.items():
        edges = graph.setdefault(name, {})
        here = name if is_package else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str | None] = []
            if isinstance(node, ast.Import):
                targets = [known(alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets = [known(f"{source}.{alias.name}") or known(source) for alias in node.names]
            for target in targets:
                if target is not None and target != name:
                    edges.setdefault(target, f"{path.relative_to(root)}:{node.lineno}")
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def describe(graph: Graph, component: list[str]) -> str:
    """One loop through the component, each import with its file and line."""
    members = set(component)
    start = component[0]
    # breadth-first from start back to start, staying inside the component
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier and start not in previous:
        following = []
        for v in frontier:
            for w in graph[v]:
                if w in members and w not in previous:
                    previous[w] = v
                    following.append(w)
        frontier = following
    loop = [start]
    v = previous[start]
    while v != start:
        loop.append(v)
        v = previous[v]
    loop.append(start)
    loop.reverse()
    steps = [f"{a} -> {b} ({graph[a][b]})" for a, b in pairwise(loop)]
    return f"cycle among {', '.join(component)}:\n    " + "\n    ".join(steps)


def lint_imports(cwd: Path, config: Path, pythonpath: Path) -> subprocess.CompletedProcess[str]:
    """Runs import-linter's CLI on a config, the packages imported from `pythonpath` (not from an
    installed copy elsewhere)."""
    exe = Path(sys.executable).with_name("lint-imports")
    command = str(exe) if exe.exists() else shutil.which("lint-imports")
    assert command, "lint-imports is missing: install the test extra (scripts/bootstrap test)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(pythonpath), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [command, "--no-cache", "--no-logo", str(config)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_no_import_cycles() -> None:
    graph = import_graph(ROOT, PACKAGES)
    assert len(graph) > 50, "the graph misses the library's modules"
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(describe(graph, c) for c in found)


def test_import_contracts_hold() -> None:
    run = lint_imports(ROOT, ROOT / "pyproject.toml", ROOT)
    assert run.returncode == 0, f"broken import contracts (pyproject.toml [tool.importlinter]):\n{run.stdout}{run.stderr}"
    assert "BROKEN" not in run.stdout and " KEPT" in run.stdout, run.stdout


def _plant(tmp_path: Path) -> Path:
    """A package `house` with an upward import (low imports high) and a cycle (a <-> b) whose
    return leg is a relative import inside a function and whose other one is TYPE_CHECKING only."""
    house = tmp_path / "house"
    house.mkdir()
    (house / "__init__.py").write_text("")
    (house / "high.py").write_text("VALUE = 1\n")
    (house / "low.py").write_text("from house.high import VALUE\n")
    (house / "a.py").write_text(
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from house.b import g\n\n\ndef f() -> None: ...\n"
    )
    (house / "b.py").write_text("def g() -> None:\n    from . import a\n    a.f()\n")
    config = tmp_path / ".importlinter"
    config.write_text(
        "[importlinter]\nroot_package = house\n\n"
        "[importlinter:contract:layers]\nname = high above low\ntype = layers\n"
        "containers =\n    house\nlayers =\n    high\n    low\n"
    )
    return config


def test_cycle_check_catches_a_planted_cycle(tmp_path: Path) -> None:
    _plant(tmp_path)
    graph = import_graph(tmp_path, ["house"])
    assert graph["house.low"] == {"house.high": "house/low.py:1"}
    assert cycles(graph) == [["house.a", "house.b"]]
    text = describe(graph, ["house.a", "house.b"])
    assert "house.a -> house.b (house/a.py:4)" in text and "house.b -> house.a (house/b.py:2)" in text


def test_contract_check_catches_a_planted_upward_import(tmp_path: Path) -> None:
    config = _plant(tmp_path)
    run = lint_imports(tmp_path, config, tmp_path)
    assert run.returncode != 0, run.stdout + run.stderr
    assert "BROKEN" in run.stdout and "house.low is not allowed to import house.high" in run.stdout, run.stdout
