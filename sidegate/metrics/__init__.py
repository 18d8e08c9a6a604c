"""The one place for Prometheus metric names, label sets and label bounding.

Names follow the OpenTelemetry GenAI semantic conventions where one exists (dots -> underscores, the
unit appended as Prometheus does: ``gen_ai.server.time_to_first_token`` [s] ->
``gen_ai_server_time_to_first_token_seconds``); everything Sidegate-specific is ``sidegate_*``.

Label values are bounded (sidegate/metrics/labels.py): models and providers must be in the config (else ``other``), tenants are
the configured ones plus at most ``MAX_DYNAMIC_TENANTS`` more seen at run time, and nothing that looks
like a key ever becomes a label. Callers pass raw values to the helper functions below; only this
module touches ``.labels()``.

Multi-process: set ``PROMETHEUS_MULTIPROC_DIR`` (an empty, per-deployment directory) in the
environment of every worker *before* it starts; each worker then writes its samples there and
whichever worker holds the metrics port serves the aggregate (see docs/observability.md).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)

from sidegate.metrics.labels import (  # noqa: F401 - the label bounds, re-exported: callers use `metrics.X`
    AUTHZ_REASONS,
    CACHE_RESULTS,
    GUARD_ACTIONS,
    MAX_DYNAMIC_TENANTS,
    OTHER,
    QUOTA_SCOPES,
    RESERVED_PROVIDERS,
    ROUTE_POLICIES,
    ROUTE_REASONS,
    Bounded,
    action_label,
    cache_label,
    configure,
    entity_label,
    looks_like_secret,
    model_label,
    name_label,
    policy_label,
    provider_label,
    reason_label,
    route_reason_label,
    scope_label,
    status_class,
    status_code,
    tenant_label,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


# -- registry and metrics ------------------------------------------------------------------------


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


REGISTRY = CollectorRegistry(auto_describe=True)
"""Sidegate's metrics (plus process/platform/GC collectors when single-process)."""
if multiprocess_dir() is None:
    for _c in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        REGISTRY.register(_c)

# Bucket boundaries advised by the OpenTelemetry GenAI semantic conventions.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
STAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

GENAI = ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model")

TOKEN_USAGE = Histogram(
    "gen_ai_client_token_usage", "Input and output tokens per request (OTel gen_ai.client.token.usage).",
    [*GENAI, "gen_ai_token_type"], buckets=TOKEN_BUCKETS, registry=REGISTRY,
)  # fmt: skip
TIME_TO_FIRST_TOKEN = Histogram(
    "gen_ai_server_time_to_first_token", "Time to the first streamed content for successful streams.",
    GENAI, unit="seconds", buckets=TTFT_BUCKETS, registry=REGISTRY,
)  # fmt: skip
TIME_PER_OUTPUT_TOKEN = Histogram(
    "gen_ai_server_time_per_output_token", "Time per output token after the first, successful streams.",
    GENAI, unit="seconds", buckets=TPOT_BUCKETS, registry=REGISTRY,
)  # fmt: skip
REQUEST_DURATION = Histogram(
    "gen_ai_server_request_duration", "Duration of the final provider try (to the last byte).",
    [*GENAI, "status_class"], unit="seconds", buckets=DURATION_BUCKETS, registry=REGISTRY,
)  # fmt: skip

REQUESTS = Counter(
    "sidegate_requests", "Completed client requests by status class (cache hits: provider=cache).",
    ["tenant", "model", "provider", "status_class"], registry=REGISTRY,
)  # fmt: skip
TOKENS = Counter(
    "sidegate_tokens", "Tokens by type: input (all prompt tokens), output, cached (prompt-cache reads), "
    "cache_creation.", ["tenant", "model", "provider", "type"], registry=REGISTRY,
)  # fmt: skip
COST = Counter(
    "sidegate_cost_usd", "Spend in US dollars.", ["tenant", "model", "provider"], registry=REGISTRY
)
ABORTED = Counter(
    "sidegate_requests_aborted", "Requests whose response did not complete (client or upstream went away).",
    ["model", "provider"], registry=REGISTRY,
)  # fmt: skip
FALLBACKS = Counter(
    "sidegate_fallbacks", "Requests answered by a try after the first (attempt > 1).",
    ["model", "provider"], registry=REGISTRY,
)  # fmt: skip
PROVIDER_RETRIES = Counter(
    "sidegate_provider_retried_errors", "Provider tries that failed with a retriable status and were retried on "
    "the next provider.", ["model", "provider", "status"], registry=REGISTRY,
)  # fmt: skip
ROUTE_DECISIONS = Counter(
    "sidegate_route_decisions", "First-provider choices by routing policy and reason (docs/routing.md); provider "
    "`weighted`: an ordered start at a load-balanced priority group.", ["model", "policy", "provider", "reason"], registry=REGISTRY,
)  # fmt: skip
CACHE_LOOKUPS = Counter(
    "sidegate_cache_lookups", "Response cache lookups by result.", ["result"], registry=REGISTRY
)
CACHE_INDEX_SYNCED = Gauge(
    "sidegate_cache_index_synced", "1 while the local index of the store's exact-cache entries is trusted (a "
    "lookup of an entry it lacks is a miss without a store call), else 0.", registry=REGISTRY,
    multiprocess_mode="livemin",
)  # fmt: skip
CACHE_INDEX_LOADS = Counter(
    "sidegate_cache_index_loads", "Times the cache key index read the store's entries: at start, and after either of "
    "its connections was new (reports may have been lost).", registry=REGISTRY,
)  # fmt: skip
QUOTA_REJECTIONS = Counter(
    "sidegate_quota_rejections",
    "Requests refused by a quota, by scope kind.",
    ["tenant", "scope"],
    registry=REGISTRY,
)
QUOTA_LEASES = Counter(
    "sidegate_quota_leases", "Leases of the global limits this process held (counted when each ends).",
    registry=REGISTRY,
)
QUOTA_LEASE_ADMITS = Counter(
    "sidegate_quota_lease_admits",
    "Requests admitted from a lease without a store call (counted when the lease ends).",
    registry=REGISTRY,
)
GUARD_ACTIONS_TOTAL = Counter(
    "sidegate_guard_actions",
    "Guardrail actions by entity type and action.",
    ["entity", "action"],
    registry=REGISTRY,
)
AUTHZ_DENIALS = Counter(
    "sidegate_authz_denials", "Refused client credentials by reason.", ["reason"], registry=REGISTRY
)
STORE_ERRORS = Counter(
    "sidegate_store_errors",
    "Failed calls to the Redis-protocol store.",
    ["component", "op"],
    registry=REGISTRY,
)
STAGE_DURATION = Histogram(
    "sidegate_stage_duration", "Time spent in one gateway stage.", ["stage"], unit="seconds",
    buckets=STAGE_BUCKETS, registry=REGISTRY,
)  # fmt: skip
LEDGER_RECORDS = Counter(
    "sidegate_ledger_records", "Usage ledger records by outcome (written, spilled, replayed, already_written, dropped_*).",
    ["outcome"], registry=REGISTRY,
)  # fmt: skip
LEDGER_QUEUE = Gauge(
    "sidegate_ledger_queue_depth", "Usage ledger records waiting to be written.", registry=REGISTRY,
    multiprocess_mode="livesum",
)  # fmt: skip

# -- ledger shipper (`sidegate ledger run` / `ship`: the ledger into ClickHouse) -----------------
LEDGER_SHIP_RECORDS = Counter(
    "sidegate_ledger_ship_records", "Ledger records the ClickHouse shipper handled, by outcome: shipped "
    "(inserted and acknowledged), trimmed (gone from the stream before they could be shipped).",
    ["outcome"], registry=REGISTRY,
)  # fmt: skip
LEDGER_SHIP_BATCHES = Counter(
    "sidegate_ledger_ship_batches",
    "Batches the ClickHouse shipper inserted and acknowledged.",
    registry=REGISTRY,
)
LEDGER_SHIP_FAILURES = Counter(
    "sidegate_ledger_ship_insert_failures", "Failed ClickHouse calls of the shipper (each is retried), by "
    "operation: insert, connect.", ["op"], registry=REGISTRY,
)  # fmt: skip
LEDGER_SHIP_LAG = Gauge(
    "sidegate_ledger_ship_lag_records", "Ledger records the shipper's consumer group has not acknowledged yet "
    "(not yet read + read but not yet inserted).", registry=REGISTRY, multiprocess_mode="livemax",
)  # fmt: skip
LEDGER_SHIP_SINCE_INSERT = Gauge(
    "sidegate_ledger_ship_seconds_since_insert", "Seconds since the shipper's last successful insert (since its "
    "start before the first); alert on it together with the lag.", registry=REGISTRY,
    multiprocess_mode="livemax",
)  # fmt: skip


def ledger_ship_started(seconds_since_insert: Any) -> None:
    """Compute the seconds-since gauge at each scrape (a hung shipper must show it growing)."""
    if multiprocess_dir() is None:
        LEDGER_SHIP_SINCE_INSERT.set_function(seconds_since_insert)
    else:
        LEDGER_SHIP_SINCE_INSERT.set(seconds_since_insert())


def ledger_ship_batch(records: int) -> None:
    child(LEDGER_SHIP_RECORDS, "shipped").inc(records)
    LEDGER_SHIP_BATCHES.inc()
    if multiprocess_dir() is not None:
        LEDGER_SHIP_SINCE_INSERT.set(0)


def ledger_ship_trimmed(records: int) -> None:
    child(LEDGER_SHIP_RECORDS, "trimmed").inc(records)


def ledger_ship_failure(op: str) -> None:
    child(LEDGER_SHIP_FAILURES, name_label(op)).inc()


def ledger_ship_lag(records: int) -> None:
    LEDGER_SHIP_LAG.set(records)


# -- the ledger's bound and archive (docs/observability.md, "The ledger's bound", "Archive") ----------
# sidegate_ledger_records_total above also counts outcome="spilled" (to the local spill file),
# "replayed" (from it into the stream), "already_written" (a spilled batch whose first append had
# landed: skipped on replay) and "dropped_spill_full" (the spill's byte bound reached).
LEDGER_SPILL_BYTES = Gauge(
    "sidegate_ledger_spill_bytes", "Bytes in this process's ledger spill file (records waiting for the store).",
    registry=REGISTRY, multiprocess_mode="livesum",
)  # fmt: skip
LEDGER_UNREAD_TRIMMED = Gauge(
    "sidegate_ledger_unread_trimmed",
    "Ledger records MAXLEN trimmed before the slowest consumer group read them (store-wide, since the stream began).",
    registry=REGISTRY, multiprocess_mode="max",
)  # fmt: skip
LEDGER_TRIMMED = Counter(
    "sidegate_ledger_trimmed", "Ledger records the archiver trimmed from the stream after archiving them.",
    registry=REGISTRY,
)  # fmt: skip
LEDGER_ARCHIVED = Counter(
    "sidegate_ledger_archived", "Ledger records written to object storage (and verified) by the archiver.",
    registry=REGISTRY,
)  # fmt: skip
LEDGER_ARCHIVE_OBJECTS = Counter(
    "sidegate_ledger_archive_objects", "Archive objects written and verified.", registry=REGISTRY,
)  # fmt: skip
LEDGER_ARCHIVE_ERRORS = Counter(
    "sidegate_ledger_archive_errors", "Archive passes that failed (upload, verification or store).",
    ["stage"], registry=REGISTRY,
)  # fmt: skip
LEDGER_ARCHIVE_WATERMARK = Gauge(
    "sidegate_ledger_archive_watermark_seconds",
    "Time (Unix s) of the newest ledger record archived: alert when it falls behind older_than.",
    registry=REGISTRY, multiprocess_mode="max",
)  # fmt: skip
LEDGER_ARCHIVE_BLOCKED = Gauge(
    "sidegate_ledger_archive_untrimmed",
    "Archived ledger records kept in the stream because a consumer group has not acknowledged them.",
    registry=REGISTRY, multiprocess_mode="max",
)  # fmt: skip

# -- helpers for the other components (they never call .labels() themselves) --------------------

_CHILDREN: dict[tuple[int, tuple[str, ...]], Any] = {}


def child(metric: Counter | Histogram | Gauge, *values: str) -> Any:
    """``metric.labels(*values)``, memoised (label values are bounded, so the memo is too); about
    half the cost of an observer call otherwise goes to ``labels()``."""
    key = (id(metric), values)
    found = _CHILDREN.get(key)
    if found is None:
        found = _CHILDREN[key] = metric.labels(*values)
    return found


def route_decision(model: str, policy: str, provider: str, reason: str) -> Callable[[], None]:
    """The counter of one routing decision (its `inc`: the caller keeps it for the next same decision)."""
    p = provider if provider == "weighted" else provider_label(provider)
    return child(ROUTE_DECISIONS, model_label(model), policy_label(policy), p, route_reason_label(reason)).inc  # type: ignore[no-any-return]


def cache_lookup(result: str) -> None:
    child(CACHE_LOOKUPS, cache_label(result)).inc()


def cache_index_synced(synced: bool) -> None:
    CACHE_INDEX_SYNCED.set(1 if synced else 0)


def cache_index_load() -> None:
    CACHE_INDEX_LOADS.inc()


def quota_rejection(scope: str, tenant: str = "") -> None:
    """`scope`: the refusing scope's kind, or its key (``tenant:acme``, ``key:<key id>``,
    ``model:acme:gpt-4o``), of which only the kind becomes the label: a key id is never a label."""
    child(QUOTA_REJECTIONS, tenant_label(tenant), scope_label(scope.split(":", 1)[0])).inc()


def quota_lease_ended(admitted: int) -> None:
    QUOTA_LEASES.inc()
    if admitted:
        QUOTA_LEASE_ADMITS.inc(admitted)


def guard_action(entity: str, action: str, count: int = 1) -> None:
    child(GUARD_ACTIONS_TOTAL, entity_label(entity), action_label(action)).inc(count)


def authz_denial(reason: str) -> None:
    child(AUTHZ_DENIALS, reason_label(reason)).inc()


def store_error(component: str, op: str = "") -> None:
    child(STORE_ERRORS, name_label(component), name_label(op or "call")).inc()


def observe_stage(stage: str, seconds: float) -> None:
    child(STAGE_DURATION, name_label(stage)).observe(seconds)


@contextmanager
def stage_timer(stage: str) -> Iterator[None]:
    """``with stage_timer("cache"): ...`` observes the block's duration (also when it raises)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        observe_stage(stage, time.perf_counter() - t0)


# -- series that exist from the start (the dashboard and alerts rely on them) --------------------

LEDGER_OUTCOMES = ("written", "spilled", "replayed", "already_written", "dropped_full", "dropped_error", "dropped_spill_full")


def declare_gateway_series() -> None:
    """Exports the gateway's fixed-label counters at 0 before anything happens. A labelled counter
    otherwise appears with its first increment, so an alert on it (``rate(...dropped...) > 0``)
    matches nothing rather than 0 while all is well, and ``rate()`` misses that first increment (its
    series has no earlier sample). Called once by the gateway process (the metrics feature), not by
    authz, which writes no ledger."""
    for outcome in LEDGER_OUTCOMES:
        child(LEDGER_RECORDS, outcome)
