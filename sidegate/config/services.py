"""The listener, the Sidegate services, the store and observability: where things run and talk."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from sidegate.config.base import StrictModel
from sidegate.config.cpus import auto_extproc_workers, usable_cpus
from sidegate.config.ledger_archive import LedgerArchiveConfig, LedgerSpillConfig
from sidegate.config.ledger_ship import LedgerShipConfig
from sidegate.config.storeurl import is_cluster_url, parse_cluster_url
from sidegate.config.tracing import TracingConfig


class ListenerConfig(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    admin_host: str = "127.0.0.1"
    """Envoy admin interface bind address (keep it private: it can drain and stop Envoy)."""
    admin_port: int = Field(9901, ge=0, le=65535)
    max_request_bytes: int = Field(32 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    """Largest request body served (a gzip body counts inflated); larger ones get 413 in the
    client's API format. Envoy and the Python services hold a request whole while the features read
    it, so memory grows with it: at most 256 MiB (the bound docs/architecture.md, "Limits",
    explains). Env SIDEGATE_MAX_REQUEST_BYTES."""
    max_response_bytes: int = Field(32 * 1024 * 1024, ge=64 * 1024, le=256 * 1024 * 1024)
    """Largest non-streaming answer served, the provider's body and the client's (translated) one:
    Envoy buffers them whole (per-try stage, usage reader). Larger ones get 502 in the client's API
    format. Streams (SSE) are not buffered and not bounded by it. docs/architecture.md, "Limits".
    Env SIDEGATE_MAX_RESPONSE_BYTES."""
    request_timeout_s: float = Field(60.0, gt=0)
    """Time for a client to send its whole request (headers and body): slow senders get 408."""
    max_connections: int = Field(10_000, ge=1)
    """Open downstream connections Envoy accepts at once (overload manager); past it new ones are
    refused until some close."""
    idle_timeout_s: float = Field(60.0, gt=0)
    """A client connection with no request in flight is closed after this long."""
    stream_idle_timeout_s: float = Field(300.0, gt=0)
    """A request with no data in either direction for this long is reset (Envoy's
    `stream_idle_timeout`); a provider's silence is cut sooner by `models.*.per_try_idle_timeout_s`."""

    @model_validator(mode="after")
    def _one_stream_limit(self) -> ListenerConfig:
        """Envoy 1.40 has one buffer limit per stream for both directions, sized from the answers'
        limit (measured without this check, 8 MiB requests and 4 MiB answers: a 6 MiB request got
        a 413 on one lane and stalled until the request timeout on another)."""
        if self.max_response_bytes < self.max_request_bytes:
            raise ValueError(
                f"max_response_bytes ({self.max_response_bytes}) must be at least max_request_bytes "
                f"({self.max_request_bytes}): Envoy buffers a request and its answer under one limit per stream"
            )
        return self


def local_address(host: str) -> str:
    """Where a process on the same host reaches a service bound to `host` (a wildcard -> loopback)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


class ServicesConfig(StrictModel):
    host: str = "127.0.0.1"
    """Bind address of authz and extproc (Envoy reaches them on loopback when this is 0.0.0.0/::)."""
    metrics_host: str = "127.0.0.1"
    """Bind address of the /metrics endpoints (0.0.0.0 for Prometheus in k8s/compose)."""
    authz_port: int = Field(9001, ge=0, le=65535)
    extproc_port: int = Field(9002, ge=0, le=65535)
    authz_workers: int = Field(1, ge=1, le=64)
    """authz processes, on ports authz_port, authz_port+1, ... (one Envoy endpoint each)."""
    extproc_workers: int = Field(1, ge=0, le=64)
    """extproc processes, on ports extproc_port, extproc_port+1, ... (one Envoy endpoint each: Envoy
    keeps one HTTP/2 connection per worker thread to a gRPC cluster, so SO_REUSEPORT splits badly).
    0 (auto): one per two usable CPUs, at least 1 (sidegate/config/cpus.py; Envoy's auto
    concurrency takes the rest): resolved when the config is parsed, so every process that reads
    it agrees. Set it explicitly where Envoy and extproc run in separate containers."""
    envoy_concurrency: int = Field(0, ge=0, le=256)
    """Envoy worker threads when `sidegate up` starts Envoy. 0 (auto): the CPUs this process may
    use (affinity, capped by a cgroup CPU limit) minus one per Python service process started
    beside it, at least 1 (on two cores, one worker beside extproc serves ~10-20 % more than two:
    docs/performance.md). The SIDEGATE_ENVOY_CONCURRENCY environment variable overrides it."""
    metrics_port: int = Field(9464, ge=0, le=65535)
    """extproc's Prometheus /metrics port (0 = off)."""
    authz_metrics_port: int = Field(9465, ge=0, le=65535)
    """authz's Prometheus /metrics port (0 = off)."""
    grpc_timeout_s: float = Field(5.0, gt=0)
    drain_s: float = Field(30.0, ge=0)
    """Grace period on SIGTERM: Envoy drains and in-flight requests (streams too) may finish."""
    admin_host: str = "127.0.0.1"
    """Admin API bind address (keys, tenants, limits). Started by `sidegate up` when the
    SIDEGATE_ADMIN_TOKEN environment variable is set."""
    admin_port: int = Field(9003, ge=0, le=65535)
    auth_max_failures: int = Field(20, ge=1)
    """Failed authentications with one key id from one source address within a minute before
    that id is refused from that address (429) without checking its secret."""
    auth_max_source_failures: int = Field(0, ge=0)
    """Failed authentications (any key) from one source address within a minute before that
    address's failures are answered 429; valid keys from it are still served. 0: 10 x
    auth_max_failures."""
    auth_block_s: float = Field(60.0, gt=0)
    auth: Literal["ext_authz", "inline"] = "inline"
    """`inline` (default): the gateway stage checks the key itself (the HTTP front, or the gateway
    ext_proc at request-headers time). `ext_authz`: Envoy asks the separate authz service first (one
    more gRPC hop; with it, `front` defaults to `ext_proc`)."""
    failure_mode_allow: bool = False
    """If the Sidegate services are unreachable: False -> Envoy answers 5xx (safe default)."""
    front: Literal["ext_proc", "http"] = "http"
    """Transport of the features' once-per-request hooks. `http` (default): Envoy's ext_authz HTTP
    client posts the buffered request to extproc's HTTP front (one plain HTTP/1.1 exchange, several
    times cheaper than gRPC in Python: docs/performance.md); needs `auth: inline`. `ext_proc`: a gRPC
    ext_proc stream (headers + body messages), the shape of the mesh snippets; the default when
    `auth: ext_authz` is set and `front` is not."""
    front_port: int = Field(9004, ge=0, le=65535)
    """extproc's HTTP front (`front: http`), on front_port, front_port+1, ... (one per worker)."""
    grpc_server: Literal["grpcio", "lean"] = "grpcio"
    """Server of the ext_proc gRPC streams (both phases). `grpcio` (default): grpc.aio on
    `extproc_port`. `lean`: extproc's own HTTP/2 framer for that one method (extproc/h2c.py; ~2-4x
    less CPU per stream and message, docs/performance.md) on `lean_port`; grpc.aio keeps the
    access-log and health services on `extproc_port`. Env SIDEGATE_GRPC_SERVER."""
    lean_port: int = Field(9010, ge=0, le=65535)
    """The lean ext_proc server (`grpc_server: lean`), on lean_port, lean_port+1, ... (one per worker)."""
    internal_token_env: str = "SIDEGATE_INTERNAL_TOKEN"
    """Environment variable holding the secret Envoy presents to the services on every call
    (docs/deployment.md, "Internal trust"); when unset, the services read `internal_token_file`."""
    internal_token_file: str = "/run/sidegate/internal-token.yaml"
    """File Envoy reads that secret from (an SDS resource file, named in its bootstrap; the value
    itself never is), written by `sidegate internal-token -o FILE`. `sidegate up` writes a fresh one
    per start in its work directory instead."""
    restart_healthy_s: float = Field(60.0, gt=0)
    """`sidegate up`: a restarted child that stays up this long is healthy again (its restart
    back-off starts over). Children are never given up on (docs/deployment.md)."""
    restart_backoff_max_s: float = Field(30.0, gt=0)
    """`sidegate up`: longest wait between restarts of a child that keeps exiting."""
    xds: bool = True
    """Envoy gets its listener, routes and clusters from Sidegate's xDS server (ADS over gRPC), so
    models, providers, chains, weights and prices change live (docs/control-plane.md). False: a
    static bootstrap, re-rendered and hot-restarted for each such change."""
    xds_port: int = Field(9020, ge=0, le=65535)
    """The xDS server's port (loopback: only this replica's Envoy connects)."""
    direct_lane: bool = True
    """Non-streaming requests whose providers take the client's body as is skip the per-try
    ext_proc: Envoy injects the credential and reads the usage; the completion hooks get the finished
    request from Envoy's access log (docs/performance.md). False: every try goes through Python."""

    @model_validator(mode="after")
    def _auto_workers(self) -> ServicesConfig:
        """`extproc_workers: 0` -> the count for this host's usable CPUs (see the field)."""
        if self.extproc_workers == 0:
            self.extproc_workers = auto_extproc_workers(usable_cpus())
        return self

    @model_validator(mode="before")
    @classmethod
    def _front_follows_auth(cls, data: Any) -> Any:
        # A file that names the separate authz service (every file written before the HTTP front
        # became the default) keeps the gRPC front it was written for, instead of failing on
        # "front: http needs auth: inline".
        if isinstance(data, dict) and data.get("auth") == "ext_authz" and "front" not in data:
            return {**data, "front": "ext_proc"}
        return data


class StoreConfig(StrictModel):
    url: str | None = None
    """redis://, rediss:// or unix:// URL of Redis/Valkey/Dragonfly. None -> embedded Valkey.
    `redis+cluster://[[user]:password@]host:port[,host:port...]`: a Redis/Valkey Cluster (its seed nodes;
    the clients read the slot map and follow MOVED/ASK; docs/deployment.md, "A store cluster")."""
    embedded_port: int = Field(0, ge=0, le=65535)
    socket_timeout_s: float = Field(1.0, gt=0)
    """Socket timeout of store calls; each quota call is further bounded by quota.op_timeout_s."""
    fail_mode: Literal["open", "closed"] = "open"
    cache_index: bool = True
    """Keep a local index of the exact-cache entries the store holds, in step through the store's
    key tracking (`CLIENT TRACKING ... BCAST`): a lookup of an entry the store lacks is a miss without
    a store call (docs/cache.md, "The local key index"). Needs a plain `redis://` URL."""
    cache_index_max_keys: int = Field(500_000, ge=1000)
    """Past this many entries the index is dropped and every exact lookup asks the store (~60 bytes each)."""

    @model_validator(mode="after")
    def _cluster_url(self) -> StoreConfig:
        """A `redis+cluster://` URL names seed nodes as host:port, and no database (a cluster has
        only database 0) nor options: refused here rather than at the first request."""
        if self.url and is_cluster_url(self.url):
            try:
                parse_cluster_url(self.url)
            except ValueError as exc:
                raise ValueError(f"store.url: {exc}") from None
        return self


class ObservabilityConfig(StrictModel):
    access_log: str | None = "-"
    """Envoy JSON access log: "-" for stdout, a file path, or null for none."""
    ledger: bool = True
    """Append one usage record per request to the `sg:ledger` Redis Stream."""
    ledger_maxlen: int = Field(1_000_000, ge=1000)
    """Approximate length bound of the stream (`XADD MAXLEN ~`) when no archive is configured;
    records trimmed before a consumer group read them show in `sidegate_ledger_unread_trimmed`.
    With `ledger_archive.url` set there is no MAXLEN: the archiver trims what it archived and
    every consumer group acknowledged (docs/observability.md, "The ledger's bound")."""
    ledger_spill: LedgerSpillConfig = Field(default_factory=LedgerSpillConfig)
    """Where the ledger writer puts records the store cannot take right now (replayed later)."""
    ledger_archive: LedgerArchiveConfig = Field(default_factory=LedgerArchiveConfig)
    """Old ledger records rolled off to object storage, then trimmed from the stream."""
    ledger_ship: LedgerShipConfig = Field(default_factory=LedgerShipConfig)
    """Copy the ledger into ClickHouse continuously (`sidegate ledger run`, started by `sidegate up`
    when `ledger_ship.url` is set): docs/observability.md, "The ledger in ClickHouse"."""
    ledger_metrics_port: int = Field(9466, ge=0, le=65535)
    """`sidegate ledger run`'s Prometheus /metrics port (0: `sidegate up` picks a free one)."""
    tracing: TracingConfig = Field(default_factory=TracingConfig)
    """OpenTelemetry traces (Envoy's tracer and Sidegate's spans); off unless `endpoint` is set."""
