"""Quota configuration (embedded in the main config) and how a request's scopes are built."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sidegate.config.pricing import Price, price_for


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(StrictModel):
    """Limits of one scope; None means unlimited. 0 blocks everything of that kind."""

    rpm: int | None = Field(None, ge=0)
    """Requests per window (a minute by default)."""
    tpm: int | None = Field(None, ge=0)
    """Tokens per window: prompt + max output at admission, replaced by real usage at settle."""
    daily_usd: float | None = Field(None, ge=0)
    """Spend per UTC calendar day. Checked before a request, charged after it."""
    monthly_usd: float | None = Field(None, ge=0)
    """Spend per UTC calendar month."""

    @property
    def empty(self) -> bool:
        return self.rpm is None and self.tpm is None and self.daily_usd is None and self.monthly_usd is None


class TenantQuota(StrictModel):
    """A tenant's limits, with optional per-key and per-model (tenant+model) overrides."""

    limits: Limits = Field(default_factory=Limits)
    keys: dict[str, Limits] = Field(default_factory=dict)
    """Key id -> limits of that key alone."""
    models: dict[str, Limits] = Field(default_factory=dict)
    """Client model name -> limits of this tenant on that model."""


class TokenizerConfig(StrictModel):
    o200k_path: Path | None = None
    """Local copy of ``o200k_base.tiktoken`` (gpt-4o, o-series, gpt-4.1, gpt-5); None -> cl100k estimate."""
    claude_factor: float = Field(1.2, gt=0)
    """claude-* prompts: cl100k count times this factor (Anthropic's tokenizer is not public)."""
    other_factor: float = Field(1.0, gt=0)
    """Models of unknown family: cl100k count times this factor."""
    image_tokens: int = Field(765, ge=0)
    """Estimate for each image part (an OpenAI 1024x1024 high-detail image)."""
    exact_chars: int = Field(400_000, ge=1000)
    """Prompts longer than this (in characters) are counted exactly up to here, extrapolated beyond."""
    thread_above_bytes: int = Field(65_536, ge=0)
    """``count_async`` counts bodies larger than this in a worker thread."""


class LeasePolicy(StrictModel):
    """Local admission from leases of the global limits (sidegate/features/quota/lease.py): most requests of
    a busy scope set are admitted without a store round trip. The limits still hold across all
    gateways; the price: while a lease is held (at most ``ttl_ms``), up to ``share`` of what a scope
    set has left waits in one process, and the usage API counts it as used."""

    enabled: bool = True
    share: float = Field(1 / 16, gt=0, le=0.5)
    """Largest part of a scope set's remaining requests (and tokens) one lease may take."""
    min_requests: int = Field(8, ge=2)
    """Smaller leases are not taken: the scope set is quiet or near its limit, and every request
    reserves in the store, exactly as without leases."""
    max_requests: int = Field(256, ge=2)
    ttl_ms: int = Field(1000, ge=10)
    """A lease ends after this long, and never past the end of its bucket (window_s / buckets),
    giving back what it did not use."""
    flush_ms: int = Field(50, ge=1, le=5000)
    """The true-ups of requests admitted from leases (real usage, spend) are written to the store
    in batches this often."""

    @model_validator(mode="after")
    def _sizes(self) -> LeasePolicy:
        if self.min_requests > self.max_requests:
            raise ValueError("lease.min_requests must not exceed lease.max_requests")
        return self


class QuotaPolicy(StrictModel):
    """Global quota knobs. Tenant limits live with the tenants (see :class:`TenantQuota`)."""

    window_s: float = Field(60.0, gt=0)
    """Length of the rpm/tpm sliding window."""
    buckets: int = Field(60, ge=1, le=1000)
    """Sub-buckets per window: the window's granularity is window_s / buckets."""
    reservation_ttl_s: float = Field(3600.0, gt=0)
    """How long a reservation can still be settled (longest request you expect)."""
    op_timeout_s: float = Field(0.5, gt=0)
    """Hard bound on one store round trip, retries included."""
    default_max_output_tokens: int = Field(4096, ge=0)
    """Output estimate when the request names no max tokens."""
    default_limits: Limits = Field(default_factory=Limits)
    """Limits of tenants that configure none."""
    prices: dict[str, Price] = Field(default_factory=dict)
    """Model name or glob (``gpt-4o-mini*``) -> price. Models without a price cost 0."""
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    lease: LeasePolicy = Field(default_factory=LeasePolicy)

    @model_validator(mode="after")
    def _granularity(self) -> QuotaPolicy:
        ms = self.window_s * 1000
        if ms != int(ms) or int(ms) % self.buckets:
            raise ValueError("window_s * 1000 must be a whole number of milliseconds divisible by buckets")
        return self

    def price(self, model: str) -> Price | None:
        return price_for(self.prices, model)


@dataclass(frozen=True, slots=True)
class Scope:
    """One thing a request counts against, e.g. ``tenant:acme``, ``team:acme/ml``, ``user:acme/ada``,
    ``key:k_1``, ``model:acme:gpt-4o``."""

    name: str
    limits: Limits


_UNLIMITED = Limits()


def build_scopes(
    tenant: str,
    quota: TenantQuota | None = None,
    *,
    key_id: str | None = None,
    model: str | None = None,
    default_limits: Limits | None = None,
    team: str = "",
    team_limits: Limits | None = None,
    user: str = "",
    user_limits: Limits | None = None,
) -> list[Scope]:
    """The scopes of one request. The tenant scope is always present (it also records usage and
    spend), and so are the team and user scopes of a request that belongs to them, limited or not
    (their usage and spend are recorded too); key and model scopes only when they have limits."""
    q = quota or TenantQuota(limits=default_limits or Limits())
    scopes = [Scope(f"tenant:{tenant}", q.limits)]
    if team:
        scopes.append(Scope(f"team:{tenant}/{team}", team_limits or _UNLIMITED))
    if user:
        scopes.append(Scope(f"user:{tenant}/{user}", user_limits or _UNLIMITED))
    if key_id is not None and key_id in q.keys and not q.keys[key_id].empty:
        scopes.append(Scope(f"key:{key_id}", q.keys[key_id]))
    if model is not None and model in q.models and not q.models[model].empty:
        scopes.append(Scope(f"model:{tenant}:{model}", q.models[model]))
    return scopes
