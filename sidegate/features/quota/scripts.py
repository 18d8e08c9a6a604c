"""Load the quota Lua scripts from the repository's ``lua/`` folder and run them by EVALSHA.

Each script is ``quota_lib.lua`` + ``quota_<name>.lua``. The SHA1 is computed locally, so a call
is a single EVALSHA; on NOSCRIPT (store restarted, SCRIPT FLUSH, failover) the script is loaded
again with SCRIPT LOAD and the call retried once.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from sidegate.lua import lua_dir
from sidegate.store.lean import command


class LuaScript:
    """One server-side script: its source, its SHA1, and a call that survives NOSCRIPT."""

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self.reloads = 0

    @classmethod
    def from_files(cls, name: str, directory: Path | None = None) -> LuaScript:
        d = directory or lua_dir()
        parts = [(d / "quota_lib.lua").read_text(), (d / f"quota_{name}.lua").read_text()]
        return cls(name, "\n".join(parts))

    async def load(self, redis: Redis, timeout_s: float | None = None) -> None:
        sha = await command(redis, "SCRIPT", "LOAD", self.source, timeout_s=timeout_s)
        if isinstance(sha, bytes):
            sha = sha.decode()
        if sha != self.sha:  # pragma: no cover - would mean the server hashes differently
            raise RuntimeError(f"SCRIPT LOAD of {self.name} returned {sha}, expected {self.sha}")

    async def __call__(self, redis: Redis, keys: Sequence[str], args: Sequence[Any], timeout_s: float | None = None) -> Any:
        """Run the script on either client (loading it again on NOSCRIPT), the whole call within
        `timeout_s` when given."""
        deadline = None if timeout_s is None else asyncio.get_running_loop().time() + timeout_s

        def left() -> float | None:
            return None if deadline is None else max(deadline - asyncio.get_running_loop().time(), 0.0)

        try:
            return await command(redis, "EVALSHA", self.sha, len(keys), *keys, *args, timeout_s=left())
        except NoScriptError:
            self.reloads += 1
            await self.load(redis, left())
            return await command(redis, "EVALSHA", self.sha, len(keys), *keys, *args, timeout_s=left())
