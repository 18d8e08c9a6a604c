"""A quota decision and what it turns into on the wire: OpenAI-style rate-limit headers and the 429.

The decision records live here, beside the headers they render, so the store that makes decisions
and the headers that describe them both import downward (no cycle)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sidegate.errors import GatewayError


@dataclass(slots=True)
class Reservation:
    """What :meth:`QuotaStore.settle` needs; ``degraded`` = admitted while the store was down."""

    tenant: str
    request_id: str
    scopes: tuple[str, ...]
    tokens: int
    degraded: bool = False
    settled: bool = False
    bucket: int | None = None
    """Set when admitted from a lease (sidegate/features/quota/lease.py): the lease's bucket, where the
    settle's true-up goes; the store holds no record of this request. Also set on a lease's own
    reservation."""
    requests: int = 1
    """A lease's own reservation: the requests it holds."""
    bucket_left_s: float = 0.0
    """A lease's own reservation: time left in its bucket when the store granted it."""


@dataclass(slots=True)
class Decision:
    """Outcome of :meth:`QuotaStore.reserve`.

    ``reason`` (when rejected): ``rpm``, ``tpm``, ``daily_usd``, ``monthly_usd`` or ``too_large``
    (the request alone exceeds a tpm limit: waiting never helps, ``retry_after_s`` is None).
    The ``*_requests`` / ``*_tokens`` fields describe the scope with the fewest remaining requests
    (tokens) among the scopes that limit them; None when no scope does.
    """

    admitted: bool
    reason: str | None = None
    scope: str | None = None
    retry_after_s: float | None = None
    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests_s: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens_s: float | None = None
    reservation: Reservation | None = None
    degraded: bool = False

    def headers(self) -> dict[str, str]:
        return ratelimit_headers(self)


def format_reset(seconds: float) -> str:
    """A duration the way OpenAI writes resets (Go style): ``12ms``, ``1s``, ``1.5s``, ``6m0s``, ``1h0m0s``."""
    if seconds <= 0:
        return "0s"
    ms = round(seconds * 1000)
    if ms < 1000:
        return f"{max(ms, 1)}ms"
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s = f"{rest // 1000}" if rest % 1000 == 0 else f"{rest / 1000:.3f}".rstrip("0")
    if h:
        return f"{h}h{m}m{s}s"
    if m:
        return f"{m}m{s}s"
    return f"{s}s"


def ratelimit_headers(decision: Decision) -> dict[str, str]:
    """``x-ratelimit-*`` headers of the most constrained scope per kind (requests, tokens), plus
    ``retry-after`` (whole seconds) when the decision is a rejection that waiting can fix."""
    h: dict[str, str] = {}
    if decision.limit_requests is not None:
        h["x-ratelimit-limit-requests"] = str(decision.limit_requests)
        h["x-ratelimit-remaining-requests"] = str(decision.remaining_requests)
        h["x-ratelimit-reset-requests"] = format_reset(decision.reset_requests_s or 0.0)
    if decision.limit_tokens is not None:
        h["x-ratelimit-limit-tokens"] = str(decision.limit_tokens)
        h["x-ratelimit-remaining-tokens"] = str(decision.remaining_tokens)
        h["x-ratelimit-reset-tokens"] = format_reset(decision.reset_tokens_s or 0.0)
    if not decision.admitted and decision.retry_after_s is not None:
        h["retry-after"] = str(max(1, math.ceil(decision.retry_after_s)))
    return h


_WHAT = {
    "rpm": "requests per min (RPM)",
    "tpm": "tokens per min (TPM)",
    "daily_usd": "daily spend budget",
    "monthly_usd": "monthly spend budget",
}


def rejection_error(decision: Decision) -> GatewayError:
    """The 429 for a rejected decision, with the rate-limit headers attached. Budget rejections use
    OpenAI's ``insufficient_quota`` code, rate rejections ``rate_limit_exceeded``."""
    headers = ratelimit_headers(decision)
    reason = decision.reason or "rpm"
    if reason == "too_large":
        msg = (
            f"Request too large for {decision.scope}: prompt plus max output tokens exceed its "
            "tokens-per-minute limit. Reduce the prompt or max tokens."
        )
        return GatewayError(429, msg, code="rate_limit_exceeded", headers=headers)
    wait = format_reset(decision.retry_after_s or 0.0)
    msg = (
        f"Rate limit reached for {_WHAT.get(reason, reason)} on {decision.scope}. Please try again in {wait}."
    )
    code = "insufficient_quota" if reason.endswith("_usd") else "rate_limit_exceeded"
    return GatewayError(429, msg, code=code, headers=headers)
