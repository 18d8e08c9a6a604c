"""Suite-wide test settings.

``scripts/test`` runs the suite in two pytest-xdist workers (``--dist loadfile``: a module's tests,
and so its stack, stay in one worker); docs/testing.md has the numbers. A test marked
``@pytest.mark.alone`` (one that bounds a duration: the bound was set on a machine running nothing
else) runs while the other worker waits between tests, see ``pytest_runtest_protocol`` below.

Hypothesis draws the same examples on every run of the suite (``derandomize``: a seed from each
test's own source), so a tree that passed keeps passing in CI instead of failing later on a newly
drawn example; a change to a test or to Hypothesis draws a new set, and that run shows it. To search
further: ``HYPOTHESIS_PROFILE=explore`` (fresh random examples each run, as Hypothesis does by
default) or ``HYPOTHESIS_PROFILE=thorough`` (25 times the fuzz tests' examples, random;
tests/fuzz_helpers.py). docs/reliability.md says how the fuzzers are run.
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import settings

from sidegate.ports import RANGE_ENV, port_range

settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
if os.environ.get("HYPOTHESIS_PROFILE", "") in ("", "repeatable", "explore"):
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or "repeatable")


def _own_ports() -> None:
    """Each parallel worker (pytest-xdist: gw0, gw1, ...) picks its free ports from its own slice of
    the range (SIDEGATE_PORT_RANGE, or its default): two workers could otherwise pick the same port
    in the moment between checking it free and their listener binding it. Set in the environment,
    so the processes a test starts inherit it."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker.startswith("gw") or count < 2:
        return
    lo, hi = port_range()
    width = (hi - lo) // count
    first = lo + int(worker[2:]) * width
    os.environ[RANGE_ENV] = f"{first}-{first + width}"


_own_ports()


def _compile_packages() -> None:
    """With PYTHONDONTWRITEBYTECODE set (as in some CI images), no process writes a .pyc, so each
    service process a stack starts compiled Sidegate's ~300 modules from source again: 0.25 s of
    CPU a process, four processes a stack, a hundred stacks a run (docs/testing.md). Python still
    reads a .pyc it finds, so the suite writes them once (in the usual __pycache__ directories,
    which git ignores) before the workers start."""
    import compileall

    root = Path(__file__).resolve().parent.parent
    for package in ("sidegate", "authz", "extproc"):
        compileall.compile_dir(root / package, quiet=1)


def pytest_configure(config: pytest.Config) -> None:
    if sys.dont_write_bytecode and "PYTEST_XDIST_WORKER" not in os.environ:
        _compile_packages()


@contextmanager
def _turn(locks: Path, alone: bool) -> Iterator[None]:
    """A shared turn, or the machine to itself (`alone`). Two locks so an alone test is not starved:
    it takes the gate first, which stops new tests from starting, then waits on `run` for the tests
    already running to end. A shared turn holds the gate only while it joins `run`."""
    with open(locks / "turn.gate", "a") as gate, open(locks / "turn.run", "a") as run:
        if alone:
            fcntl.flock(gate, fcntl.LOCK_EX)
            fcntl.flock(run, fcntl.LOCK_EX)
        else:
            fcntl.flock(gate, fcntl.LOCK_SH)
            fcntl.flock(run, fcntl.LOCK_SH)
            fcntl.flock(gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(run, fcntl.LOCK_UN)
            fcntl.flock(gate, fcntl.LOCK_UN)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    """In a parallel run, every test's whole protocol (the module fixtures it sets up or tears down
    included) takes a turn; the workers' basetemps share one parent, which holds the lock files."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return (yield)
    locks = item.config._tmp_path_factory.getbasetemp().parent  # type: ignore[attr-defined]
    with _turn(locks, item.get_closest_marker("alone") is not None):
        return (yield)
