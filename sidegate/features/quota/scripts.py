"""The quota Lua scripts, from the repository's ``lua/`` folder: each is ``quota_lib.lua`` +
``quota_<name>.lua``, run by the store client (EVALSHA, reloaded on NOSCRIPT: sidegate/store/script.py)."""

from __future__ import annotations

from pathlib import Path

from sidegate.lua import lua_dir
from sidegate.store.script import LuaScript


def quota_script(name: str, directory: Path | None = None) -> LuaScript:
    d = directory or lua_dir()
    parts = [(d / "quota_lib.lua").read_text(), (d / f"quota_{name}.lua").read_text()]
    return LuaScript(name, "\n".join(parts))
