-- Sidegate usage ledger in ClickHouse: applied by `sidegate ledger ship --create-tables` (or
-- `observability.ledger_ship.create_tables: true`) with {database} and {table} filled in.
-- Statements are separated by a semicolon at the end of a line. docs/observability.md explains it.

CREATE DATABASE IF NOT EXISTS {database};

-- One row per ledger record; `id` is its stream id in the store (unique, time-ordered).
-- ORDER BY (tenant, ts, id): the queries are per tenant over a time range. cost_usd is a Decimal:
-- sums of money stay exact.
-- non_replicated_deduplication_window: the last 1000 inserts are remembered by their
-- insert_deduplication_token, so a batch re-sent after a crash (inserted, not yet acknowledged in
-- the store) is dropped by ClickHouse instead of stored twice.
CREATE TABLE IF NOT EXISTS {database}.{table}
(
    id String,
    ts DateTime64(3, 'UTC'),
    request_id String,
    tenant LowCardinality(String),
    key_id LowCardinality(String),
    team LowCardinality(String),
    user LowCardinality(String),
    api LowCardinality(String),
    endpoint LowCardinality(String),
    model LowCardinality(String),
    provider LowCardinality(String),
    upstream_model LowCardinality(String),
    status UInt16,
    attempts UInt16,
    stream Bool,
    aborted Bool,
    cache LowCardinality(String),
    input_tokens UInt64,
    output_tokens UInt64,
    cached_tokens UInt64,
    cache_creation_tokens UInt64,
    cost_usd Decimal(18, 9),
    latency_ms Float64,
    ttft_ms Nullable(Float64)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (tenant, ts, id)
SETTINGS non_replicated_deduplication_window = 1000;

-- Tables created before teams and users existed get their columns (a no-op on a new table).
ALTER TABLE {database}.{table} ADD COLUMN IF NOT EXISTS team LowCardinality(String) AFTER key_id;
ALTER TABLE {database}.{table} ADD COLUMN IF NOT EXISTS user LowCardinality(String) AFTER team;

-- Spend per tenant, model and UTC day. Rows are summed when parts merge, so always read it with
-- sum() ... GROUP BY (docs/observability.md). Its own deduplication window: a deduplicated insert
-- into the ledger is then not counted twice here either (verified on ClickHouse 26.9 / chDB).
CREATE TABLE IF NOT EXISTS {database}.{table}_daily
(
    day Date,
    tenant LowCardinality(String),
    model LowCardinality(String),
    requests UInt64,
    errors UInt64,
    input_tokens UInt64,
    output_tokens UInt64,
    cached_tokens UInt64,
    cost_usd Decimal(38, 9)
)
ENGINE = SummingMergeTree
ORDER BY (tenant, model, day)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.{table}_daily_mv TO {database}.{table}_daily AS
SELECT
    toDate(ts) AS day,
    tenant,
    model,
    count() AS requests,
    countIf(status >= 400 OR aborted) AS errors,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cached_tokens) AS cached_tokens,
    sum(cost_usd) AS cost_usd
FROM {database}.{table}
GROUP BY day, tenant, model;
