"""Server-side Lua scripts run by EVALSHA, the same way on every store client.

The SHA1 is computed locally, so a call is a single EVALSHA; on NOSCRIPT (store restarted, SCRIPT
FLUSH, failover) the script is loaded again with SCRIPT LOAD and the call retried once, the whole
call within the caller's time limit.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

from redis.exceptions import NoScriptError


class LuaScript:
    """One server-side script: its source, its SHA1, and how often the store had lost it."""

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self.reloads = 0


class ScriptCalls:
    """`run_script` and `load_script` of :class:`sidegate.store.protocol.Store`, written once over
    the client's own `command` (each client bounds a command its own way)."""

    async def command(self, *args: Any, timeout_s: float | None = None, lazy: bool = False) -> Any:
        raise NotImplementedError

    async def load_script(self, script: LuaScript, timeout_s: float | None = None) -> None:
        sha = await self.command("SCRIPT", "LOAD", script.source, timeout_s=timeout_s)
        if isinstance(sha, bytes):
            sha = sha.decode()
        if sha != script.sha:  # pragma: no cover - would mean the server hashes differently
            raise RuntimeError(f"SCRIPT LOAD of {script.name} returned {sha}, expected {script.sha}")

    async def run_script(
        self, script: LuaScript, keys: Sequence[str], args: Sequence[Any], timeout_s: float | None = None
    ) -> Any:
        # The deadline is only needed again after a NOSCRIPT, but must be taken before the first try.
        deadline = None if timeout_s is None else asyncio.get_running_loop().time() + timeout_s
        try:
            return await self.command("EVALSHA", script.sha, len(keys), *keys, *args, timeout_s=timeout_s)
        except NoScriptError:
            script.reloads += 1
            await self.load_script(script, _left(deadline))
            return await self.command("EVALSHA", script.sha, len(keys), *keys, *args, timeout_s=_left(deadline))


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(deadline - asyncio.get_running_loop().time(), 0.0)
