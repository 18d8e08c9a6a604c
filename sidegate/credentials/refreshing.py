"""The common machinery of the cloud token schemes (Google OAuth2, Microsoft Entra ID): a bearer
token fetched by a blocking SDK call in a thread and replaced in the background before it expires,
so ``apply`` only reads an attribute and no request ever waits for a token.

- ``start`` waits (bounded) for the first fetch; whatever its outcome, serving begins: without a
  token the provider answers 401, which the gateway reports as a 502 naming the provider only.
- Failures are logged by exception class and the SDK's own message (which names no secret: the
  SDKs never echo a token or a key) and retried with capped exponential backoff; a token that is
  still valid keeps being used meanwhile.
- ``secrets`` holds the current token and the previous ones until they expire (a provider could
  echo a token it was sent a moment ago): the per-try stage scrubs them from every answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sidegate.credentials.base import scrubbable, stop_refresher

log = logging.getLogger("sidegate.credentials")

START_WAIT_S = 15.0
"""Longest wait for the first token before serving begins (the fetch goes on in the background)."""
FETCH_TIMEOUT_S = 10.0
"""Longest a single HTTP call of a token fetch may take (the SDKs' own defaults are minutes)."""
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 60.0
MIN_REFRESH_S = 1.0
"""Never refresh more often than this (an SDK that hands back a cached token near its expiry)."""


_T = TypeVar("_T")


class OwnThread:
    """One thread of a credential's own for its blocking SDK calls, never the event loop's default
    executor: the request path runs there too (the quota's count of a large body), and a fetch
    that hangs (an unreachable metadata server, STS) must not hold its few threads."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._pool: ThreadPoolExecutor | None = None

    def run(self, fn: Callable[[], _T]) -> asyncio.Future[_T]:
        if self._pool is None:  # (no thread until the first call)
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name)
        return asyncio.get_running_loop().run_in_executor(self._pool, fn)

    def close(self) -> None:
        """Stops taking calls; one under way finishes (bounded by the SDKs' timeouts) unawaited."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def describe(exc: BaseException, depth: int = 0) -> str:
    """A failed fetch, for the log: the class and the SDK's first message (or the exception it
    wraps: google-auth wraps transport errors), bounded."""
    first = exc.args[0] if exc.args else None
    if isinstance(first, BaseException) and depth < 3:
        return f"{type(exc).__name__}: {describe(first, depth + 1)}"
    text = first if isinstance(first, str) else ""
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


class RefreshingToken:
    """Base of a bearer token scheme; subclasses implement :meth:`fetch` (blocking: runs in a thread)."""

    name = "token"
    """What the log calls it (e.g. "google", "azure-ad")."""

    def __init__(self, provider: str, refresh_margin_s: float) -> None:
        self.provider = provider
        self.refresh_margin_s = refresh_margin_s
        self.secrets: tuple[str, ...] = ()
        self._value: str | None = None
        self._expires_at = 0.0
        self._live: list[tuple[str, float]] = []  # (token, expires_at) of every token not yet expired
        self._task: asyncio.Task[None] | None = None
        self._first = asyncio.Event()
        self._changed: Callable[[], None] = lambda: None
        self._thread = OwnThread(f"{self.name}-token-{provider}")
        self.fetches = 0
        self.failures = 0

    def fetch(self) -> tuple[str, float]:
        """(token, expiry as epoch seconds), from the cloud SDK. Blocking; raises on failure."""
        raise NotImplementedError

    def apply(self, headers: dict[str, str]) -> None:
        if self._value is not None:
            headers["authorization"] = self._value

    async def start(self, secrets_changed: Callable[[], None]) -> None:
        self._changed = secrets_changed
        self._first = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"{self.name}-token-{self.provider}"
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first.wait(), START_WAIT_S)
        if self._value is None:
            log.warning("provider %s: no %s token yet: its tries get 401 (a 502 to clients) until one comes",
                        self.provider, self.name)  # fmt: skip

    async def close(self) -> None:
        task, self._task = self._task, None
        await stop_refresher(task)
        self._thread.close()

    async def _run(self) -> None:
        backoff = BACKOFF_FIRST_S
        while True:
            try:
                token, expires_at = await self._thread.run(self.fetch)
            except Exception as exc:  # the SDKs raise many types: every one is retried
                self.failures += 1
                log.warning("provider %s: %s token fetch failed (%s); retrying in %.0f s",
                            self.provider, self.name, describe(exc), backoff)  # fmt: skip
                self._first.set()
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            backoff = BACKOFF_FIRST_S
            self.fetches += 1
            self._take(token, expires_at)
            self._first.set()
            await asyncio.sleep(self.next_refresh_in(expires_at))

    def next_refresh_in(self, expires_at: float) -> float:
        """Seconds until the token is replaced: `refresh_margin_s` before it expires, but at least a
        tenth of what it has left (an SDK may hand back its cached token, close to expiry)."""
        left = expires_at - time.time()
        return max(left - self.refresh_margin_s, left / 10, MIN_REFRESH_S)

    def _take(self, token: str, expires_at: float) -> None:
        now = time.time()
        before = self.secrets
        self._live = [(t, e) for t, e in self._live if e > now and t != token] + [(token, expires_at)]
        self._value = f"Bearer {token}"
        self._expires_at = expires_at
        self.secrets = scrubbable([t for t, _ in self._live])
        if self.secrets != before:
            self._changed()
