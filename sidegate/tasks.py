"""Stopping a background asyncio task a component owns (a poll, a refresh, a sync loop)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` and wait until it has ended, so a component's close() returns only once its
    loop no longer runs (None: nothing to stop). The task's own CancelledError is expected, not an error."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
