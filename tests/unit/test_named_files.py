"""Comments, docstrings and docs send a reader to files and modules by name: every one they name
must exist. A file that is renamed or split leaves such pointers behind, and a pointer to nothing
costs a newcomer more than no pointer (docs/architecture.md is rewritten separately and skipped)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CODE = ("sidegate", "extproc", "authz")

_PATH = re.compile(r"(?<![\w/.-])((?:sidegate|extproc|authz|lua|tests|deploy|k8s|bench|docs)/[\w/.-]*\w\.(?:py|lua|md|ya?ml))")
"""A repository path such as `sidegate/core/tries.py`."""
_ROLE = re.compile(r":(?:mod|class|func|meth|data|attr|obj):`~?((?:sidegate|extproc|authz)\.[\w.]+)`")
"""A Sphinx cross-reference to one of our modules or the names in them."""
_BARE = re.compile(r"`([a-z_][a-z0-9_]*\.py)`")
"""A module file named without its folder, e.g. `tries.py`."""


def _sources() -> list[Path]:
    files = [p for d in CODE for p in sorted((ROOT / d).rglob("*.py"))]
    files += sorted((ROOT / "lua").glob("*.lua"))
    files += [p for p in sorted((ROOT / "docs").glob("*.md")) if p.name != "architecture.md"]
    return [*files, ROOT / "README.md"]


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for k in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:k]))
        except ImportError:
            continue
        try:
            for attr in parts[k:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


def test_named_files_and_modules_exist() -> None:
    in_code = {p.name for d in CODE for p in (ROOT / d).rglob("*.py")}
    anywhere = in_code | {p.name for d in ("tests", "bench", "deploy", "scripts") for p in (ROOT / d).rglob("*.py")}
    stale: list[str] = []
    for path in _sources():
        where = path.relative_to(ROOT)
        basenames = in_code if where.parts[0] in CODE else anywhere  # the library names its own files
        for n, line in enumerate(path.read_text().splitlines(), 1):
            stale += [f"{where}:{n}: {m}" for m in _PATH.findall(line) if not (ROOT / m).exists()]
            stale += [f"{where}:{n}: {m}" for m in _ROLE.findall(line) if not _resolves(m)]
            stale += [f"{where}:{n}: {m}" for m in _BARE.findall(line) if m not in basenames]
    assert not stale, "names of files or modules that do not exist:\n" + "\n".join(stale)


def test_the_check_sees_a_stale_name() -> None:
    line = "see sidegate/nowhere.py, :func:`sidegate.core.feature.nothing` and `gone.py`"
    assert _PATH.findall(line) == ["sidegate/nowhere.py"] and not (ROOT / "sidegate/nowhere.py").exists()
    assert _ROLE.findall(line) == ["sidegate.core.feature.nothing"] and not _resolves("sidegate.core.feature.nothing")
    assert _resolves("sidegate.core.feature.collect")
    assert _BARE.findall(line) == ["gone.py"]


def test_every_test_module_has_a_basename_of_its_own():
    """pytest imports tests/unit and tests/e2e modules into one namespace (rootdir-relative, no
    __init__.py): two modules of one basename stop the whole suite at collection."""
    from collections import Counter

    tests = Path(__file__).resolve().parents[1]
    names = Counter(p.name for p in tests.rglob("test_*.py"))
    assert [n for n, c in names.items() if c > 1] == []
