"""Where the Lua programs live: every one (the store's quota scripts and Envoy's filters) is a file
in the repository's ``lua/`` folder, read from here."""

from __future__ import annotations

import os
import sys
from functools import cache
from pathlib import Path


def lua_dir() -> Path:
    """``$SIDEGATE_LUA_DIR``, the repository's ``lua/`` folder (source checkout / editable install),
    or ``<prefix>/share/sidegate/lua`` (a wheel installs the programs there as data files)."""
    env = os.environ.get("SIDEGATE_LUA_DIR")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[1] / "lua"
    if repo.is_dir():
        return repo
    return Path(sys.prefix) / "share" / "sidegate" / "lua"


@cache
def read(name: str) -> str:
    """The text of ``lua/<name>`` (read once per process)."""
    return (lua_dir() / name).read_text()


def literal(s: str | None) -> str:
    """`s` as a Lua string literal (`nil` for None): how a render-time value goes into a program."""
    return "nil" if s is None else '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
