"""The one small interface every provider credential scheme implements.

A scheme is built once per provider at start (:func:`sidegate.credentials.for_provider`) and then
applied on every upstream try, so ``apply`` is the hot path: it only writes precomputed strings
(or takes the next key of a pool), never does I/O, never parses.

Cloud identities fit without changing ``apply`` for the key schemes:

- A token fetched and refreshed in the background (Google OAuth2, Microsoft Entra ID): the scheme
  is also a :class:`RefreshingCredential`: ``start`` (awaited once by the per-try stage, before
  serving) gets the first token and starts the refresh task, ``close`` stops it; ``apply`` reads
  the current token synchronously, so a refresh never sits on a request's path. The token is in
  ``secrets`` as it changes (``start``'s callback recomputes the scrub list).
- A signature over the final request (AWS SigV4): the scheme is a :class:`SigningCredential`;
  the per-try stage calls ``sign`` once the translated body is known (such a provider never takes
  the skip-the-body path); its ``apply`` sets nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Protocol, runtime_checkable

MIN_SECRET_LEN = 8
"""Values shorter than this are not scrubbed from answers: they would match ordinary text (real
provider keys are long)."""


class Credential(Protocol):
    """How the gateway proves itself to one provider on each try."""

    secrets: tuple[str, ...]
    """Values that must never reach a client or the cache: scrubbed from every answer."""

    def apply(self, headers: dict[str, str]) -> None:
        """Set this try's credential header(s) in ``headers`` (the try's header mutations)."""
        ...


def scrubbable(keys: list[str]) -> tuple[str, ...]:
    """The keys long enough to scrub from answers."""
    return tuple(k for k in keys if len(k) >= MIN_SECRET_LEN)


async def stop_refresher(task: asyncio.Task[None] | None) -> None:
    """End a refreshing credential's background task (``RefreshingCredential.close``): cancelled
    and awaited, so no refresh runs once the gateway has closed."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@runtime_checkable
class SigningCredential(Protocol):
    """A scheme that signs each try over its final request (AWS SigV4)."""

    secrets: tuple[str, ...]

    def apply(self, headers: dict[str, str]) -> None: ...

    def sign(self, method: str, authority: str, path: str, headers: dict[str, str], body: bytes) -> dict[str, str]:
        """The headers that prove this try (e.g. `authorization`, `x-amz-date`,
        `x-amz-security-token`), for `method` on `https://<authority><path>` with these `headers`
        (the try's header mutations, `content-type` among them) and `body`. Pure CPU: no I/O."""
        ...


@runtime_checkable
class RefreshingCredential(Protocol):
    """A scheme whose secret changes while the gateway runs (a token, rotated keys)."""

    secrets: tuple[str, ...]

    def apply(self, headers: dict[str, str]) -> None: ...

    async def start(self, secrets_changed: Callable[[], None]) -> None:
        """Gets the first secret (bounded in time: a failure is logged, retried in the background,
        and the tries meanwhile go without, so the provider's 401 becomes the gateway's 502), then
        keeps it fresh; calls `secrets_changed` after each change of ``secrets``."""
        ...

    async def close(self) -> None: ...
