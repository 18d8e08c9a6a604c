"""Token-aware quotas: rpm, tpm and USD budgets per scope over a Redis-protocol store."""

from sidegate.core.pricing import Price, cost_usd, price_for
from sidegate.features.quota.headers import format_reset, ratelimit_headers, rejection_error
from sidegate.features.quota.policy import (
    Limits,
    QuotaPolicy,
    Scope,
    TenantQuota,
    TokenizerConfig,
    build_scopes,
)
from sidegate.features.quota.store import Decision, QuotaStore, Reservation
from sidegate.features.quota.tokens import TokenCounter, max_output_tokens

__all__ = [
    "Decision",
    "Limits",
    "Price",
    "QuotaPolicy",
    "QuotaStore",
    "Reservation",
    "Scope",
    "TenantQuota",
    "TokenCounter",
    "TokenizerConfig",
    "build_scopes",
    "cost_usd",
    "format_reset",
    "max_output_tokens",
    "price_for",
    "ratelimit_headers",
    "rejection_error",
]
