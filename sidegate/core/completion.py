"""What a finished try tells the features: :class:`Completion`, the hook that receives it, and the
small facts derived from it (time to first token, cost). Every lane produces the same Completion:
the per-try stage, the try lane, the direct lane's access log and the gateway's own answers."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sidegate.translate.base import Usage

log = logging.getLogger("sidegate.observe")


@dataclass(slots=True)
class Completion:
    """What the observe hooks learn when a try ends."""

    meta: dict[str, Any]
    provider: str
    upstream_model: str
    status: int
    usage: Usage | None
    final: bool
    """False when Envoy will retry this try's error on the next provider."""
    streamed: bool
    aborted: bool = False
    attempt: int = 1
    started_at: float = 0.0
    """time.monotonic() when this try's request reached the upstream filter."""
    first_byte_at: float = 0.0
    """When the first response body bytes for the client were produced (TTFT end), 0 if none."""
    ended_at: float = 0.0
    chunks: int = 0
    """Response body chunks with client-visible content (for inter-token latency)."""
    retry_after_s: float | None = None
    """The provider's `retry-after`, when it sent one."""


CompletionHook = Callable[[Completion], None]


def notify(completion_hooks: list[CompletionHook], done: Completion) -> None:
    """Hand a completion to every hook; a hook must never break the response path."""
    for hook in completion_hooks:
        try:
            hook(done)
        except Exception:
            log.exception("completion hook failed")


class Filler(Protocol):
    def fill(
        self, meta: dict[str, Any], client_body: dict[str, Any] | None, response: bytes, streamed: bool,
        usage: Usage | None = None,
    ) -> None: ...  # fmt: skip


CostFn = Callable[[Completion], float]
"""Prices a completion in USD (0 when unknown); supplied by the pricing component."""

def ttft_seconds(c: Completion) -> float | None:
    """Time to first token: streamed tries that produced client-visible content only."""
    if not c.streamed or c.chunks <= 0 or c.first_byte_at <= 0:
        return None
    return max(c.first_byte_at - c.started_at, 0.0)


def time_per_output_token(c: Completion) -> float | None:
    """(end - first byte) / (output tokens - 1), for complete successful streams."""
    if ttft_seconds(c) is None or c.aborted or c.usage is None or c.usage.output_tokens <= 0:
        return None
    return max(c.ended_at - c.first_byte_at, 0.0) / max(c.usage.output_tokens - 1, 1)


def safe_cost(cost: CostFn | None, c: Completion) -> float:
    if cost is None:
        return 0.0
    try:
        value = float(cost(c))
    except Exception:
        log.exception("cost function failed")
        return 0.0
    return value if value > 0 else 0.0


def short_circuit(
    meta: dict[str, Any],
    status: int,
    *,
    provider: str = "cache",
    usage: Usage | None = None,
    started_at: float = 0.0,
    streamed: bool = False,
) -> Completion:
    """A Completion for an answer the gateway gave itself (cache hit: provider="cache"; refusal:
    provider="gateway"), so the same completion hooks count and ledger it. ``attempt`` is 0: no provider try."""
    now = time.monotonic()
    return Completion(
        meta=meta, provider=provider, upstream_model=str(meta.get("model", "")), status=status, usage=usage,
        final=True, streamed=streamed, attempt=0, started_at=started_at or now, first_byte_at=now,
        ended_at=now, chunks=1 if streamed else 0,
    )  # fmt: skip


def parse_retry_after(headers: dict[str, str]) -> float | None:
    """Seconds from `retry-after` (delta seconds; HTTP dates are ignored) or `retry-after-ms`."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(float(ms) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value:
        try:
            return max(float(value), 0.0)
        except ValueError:
            return None
    return None
