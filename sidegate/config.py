"""The one place for configuration: a typed, validated model loaded from YAML with env overrides.

Secrets never live in the YAML: providers name the environment variable that holds their key.
Tenant API keys appear only as hashes (see :mod:`sidegate.keys`).
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sidegate.errors import Api
from sidegate.features.cache.policy import CachePolicy, SemanticSettings
from sidegate.features.guard.policy import GuardPolicy
from sidegate.features.quota.policy import QuotaPolicy, TenantQuota

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


@functools.lru_cache(maxsize=256)
def _url_parts(url: str) -> tuple[bool, str, int]:
    """A provider URL's (tls, host, port), parsed once per URL (the try path asks per request)."""
    parts = urlsplit(url)
    tls = parts.scheme == "https"
    return tls, parts.hostname or "", parts.port or (443 if tls else 80)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ListenerConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    admin_host: str = "127.0.0.1"
    """Envoy admin interface bind address (keep it private: it can drain and stop Envoy)."""
    admin_port: int = Field(9901, ge=0, le=65535)
    max_request_bytes: int = Field(1024 * 1024, ge=1024, le=1024 * 1024)
    """Larger request bodies get 413 in the client's API format. At most 1 MiB for now: above that
    Envoy 1.40's buffering for the per-try ext_proc stalls or answers 413 itself (tracked as an issue)."""
    max_response_bytes: int = Field(32 * 1024 * 1024, ge=64 * 1024, le=256 * 1024 * 1024)
    """Largest non-streaming answer served, the provider's body and the client's (translated) one:
    Envoy buffers them whole (per-try stage, usage reader). Larger ones get 502 in the client's API
    format. Streams (SSE) are not buffered and not bounded by it. docs/architecture.md, "Limits"."""
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


def local_address(host: str) -> str:
    """Where a process on the same host reaches a service bound to `host` (a wildcard -> loopback)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


class ServicesConfig(_Model):
    host: str = "127.0.0.1"
    """Bind address of authz and extproc (Envoy reaches them on loopback when this is 0.0.0.0/::)."""
    metrics_host: str = "127.0.0.1"
    """Bind address of the /metrics endpoints (0.0.0.0 for Prometheus in k8s/compose)."""
    authz_port: int = Field(9001, ge=0, le=65535)
    extproc_port: int = Field(9002, ge=0, le=65535)
    authz_workers: int = Field(1, ge=1, le=64)
    """authz processes, on ports authz_port, authz_port+1, ... (one Envoy endpoint each)."""
    extproc_workers: int = Field(1, ge=1, le=64)
    """extproc processes, on ports extproc_port, extproc_port+1, ... (one Envoy endpoint each: Envoy
    keeps one HTTP/2 connection per worker thread to a gRPC cluster, so SO_REUSEPORT splits badly)."""
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
    auth: Literal["ext_authz", "inline"] = "ext_authz"
    """`ext_authz`: Envoy asks the authz service (one more gRPC hop, auth is a separate process).
    `inline`: the gateway ext_proc checks the key itself at request-headers time (faster)."""
    failure_mode_allow: bool = False
    """If the Sidegate services are unreachable: False -> Envoy answers 5xx (safe default)."""
    front: Literal["ext_proc", "http"] = "ext_proc"
    """Transport of the once-per-request gateway stages. `ext_proc`: a gRPC ext_proc stream
    (headers + body messages). `http`: Envoy's ext_authz HTTP client posts the buffered request to
    extproc's HTTP front (one plain HTTP/1.1 exchange, several times cheaper than gRPC in Python);
    needs `auth: inline`. See docs/performance.md."""
    front_port: int = Field(9004, ge=0, le=65535)
    """extproc's HTTP front (`front: http`), on front_port, front_port+1, ... (one per worker)."""
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
    direct_lane: bool = True
    """Non-streaming requests whose providers take the client's body as is skip the per-try
    ext_proc: Envoy injects the credential and reads the usage; the observers get the finished
    request from Envoy's access log (docs/performance.md). False: every try goes through Python."""


class StoreConfig(_Model):
    url: str | None = None
    """redis://, rediss:// or unix:// URL of Redis/Valkey/Dragonfly. None -> embedded Valkey."""
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


class WeightedKey(_Model):
    env: str
    weight: int = Field(1, ge=1, le=1000)


AuthStyle = Literal["bearer", "x-api-key", "api-key", "none"]


NEVER_FORWARDED = frozenset({
    "authorization", "x-api-key", "api-key", "x-goog-api-key", "cookie", "cookie2", "forwarded",
    "host", "te", "connection", "keep-alive", "upgrade", "transfer-encoding", "accept-encoding",
    "content-encoding", "x-real-ip", "via",
})  # fmt: skip
"""Client headers `forward_client_headers` may not name (nor a prefix of them)."""
NEVER_FORWARDED_PREFIXES = ("proxy-", "x-forwarded-", "x-sidegate-", "x-envoy-", ":")
_HEADER_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]*\*?")


class ProviderConfig(_Model):
    api: Api
    """Wire schema the provider speaks: `openai` (incl. vLLM, Ollama, Groq, Mistral, Azure) or `anthropic`."""
    base_url: str
    api_key_env: str | None = None
    """Name of the environment variable holding the provider key (never the key itself)."""
    api_key_envs: list[WeightedKey] = Field(default_factory=list)
    """Several keys of one provider account/deployment, used by weight (spreads per-key rate limits)."""
    auth: AuthStyle | None = None
    """Header style; default: bearer for openai, x-api-key for anthropic."""
    path_prefix: str = ""
    """Replaces the leading `/v1` of the canonical path (e.g. Azure `/openai/deployments/{model}`)."""
    query: str = ""
    """Appended to the upstream path, e.g. `api-version=2024-10-21` for Azure."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra static headers sent to this provider."""
    forward_client_headers: list[str] = Field(default_factory=list)
    """Client request headers this provider also receives, beyond the built-in allow-list
    (docs/architecture.md, "What crosses the gateway"): e.g. `openai-organization`,
    `openai-project` (the client then picks what Sidegate's provider key bills), `x-stainless-*`
    (a trailing `*` is a prefix). Credentials, cookies, proxy and forwarding
    headers and Sidegate's or Envoy's own are refused."""
    connect_timeout_s: float = Field(5.0, gt=0)
    max_connections: int = Field(1024, ge=1)

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.path not in ("", "/"):
            raise ValueError("must not contain a path (use path_prefix)")
        return v.rstrip("/")

    @field_validator("forward_client_headers")
    @classmethod
    def _forwardable(cls, v: list[str]) -> list[str]:
        out = []
        for name in v:
            low = name.strip().lower()
            if not _HEADER_PATTERN.fullmatch(low):
                raise ValueError(f"{name!r} is not a header name (letters, digits, '-', '_'; a trailing '*' for a prefix)")
            stem, prefix = low.removesuffix("*"), low.endswith("*")
            hits = [f for f in (*NEVER_FORWARDED, *NEVER_FORWARDED_PREFIXES) if f.startswith(stem)] if prefix else []
            if hits or low in NEVER_FORWARDED or any(stem.startswith(f) for f in NEVER_FORWARDED_PREFIXES):
                raise ValueError(f"{name!r}: credentials, cookies, proxy, forwarding and internal headers are never forwarded")
            out.append(low)
        return out

    @property
    def auth_style(self) -> AuthStyle:
        if self.auth:
            return self.auth
        return "x-api-key" if self.api is Api.ANTHROPIC else "bearer"

    @property
    def tls(self) -> bool:
        return _url_parts(self.base_url)[0]

    @property
    def host(self) -> str:
        return _url_parts(self.base_url)[1]

    @property
    def port(self) -> int:
        return _url_parts(self.base_url)[2]

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    def api_keys(self) -> list[tuple[str, int]]:
        """(key, weight) for every configured key that is set in the environment."""
        out = [(os.environ[k.env], k.weight) for k in self.api_key_envs if os.environ.get(k.env)]
        single = self.api_key()
        if single:
            out.insert(0, (single, 1))
        return out


class RouteConfig(_Model):
    provider: str
    model: str | None = None
    """Provider-side model name (alias target); default: the client's model name."""
    weight: int = Field(1, ge=1, le=1000)
    """Share of traffic among routes with the same `priority`."""
    priority: int | None = None
    """Routes with the same priority are load balanced by weight; lower priorities are tried first.
    Default: the route's position in the list (a plain ordered fallback chain)."""


class BreakerConfig(_Model):
    """Gateway-side ejection of a failing provider from a model's chain (see docs/fallback.md)."""

    failures: int = Field(5, ge=1)
    """Consecutive failed tries (429, 5xx, timeouts, resets) that eject a provider."""
    ejection_s: float = Field(30.0, gt=0)
    """First ejection time; doubles on each re-ejection (capped at max_ejection_s)."""
    max_ejection_s: float = Field(300.0, gt=0)
    honour_retry_after: bool = True
    """A 429/503 with `retry-after` ejects the provider at once, for that long (capped)."""


class ModelConfig(_Model):
    routes: list[RouteConfig] = Field(min_length=1)
    """Ordered chain: the first is primary, the rest are fallbacks."""
    retry_on_status: list[int] = Field(default_factory=lambda: [429, 500, 502, 503, 504, 529])
    per_try_timeout_s: float = Field(60.0, gt=0)
    per_try_idle_timeout_s: float | None = Field(None, gt=0)
    """Longest silence of a provider within one try, before or during its answer (a stream that
    stalls mid-way is cut after this). None: `per_try_timeout_s`."""
    timeout_s: float = Field(300.0, ge=0)
    """Overall request timeout (0 = none, for long streams)."""
    default_max_tokens: int = Field(4096, ge=1)
    cache: CachePolicy | None = None
    """Response cache policy for this model (default: `defaults.cache`)."""
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    guard: GuardPolicy | Literal["default"] | None = "default"
    """PII/injection guard for this model: a policy, null (off), or "default" (`defaults.guard`)."""

    @model_validator(mode="after")
    def _unique_providers(self) -> ModelConfig:
        names = [r.provider for r in self.routes]
        if len(names) != len(set(names)):
            raise ValueError("a provider may appear only once in a model's route chain")
        return self

    def groups(self) -> list[list[RouteConfig]]:
        """Routes grouped by priority, in order (a group is load balanced by weight)."""
        by_prio: dict[int, list[RouteConfig]] = {}
        for i, r in enumerate(self.routes):
            by_prio.setdefault(r.priority if r.priority is not None else i, []).append(r)
        return [by_prio[k] for k in sorted(by_prio)]


class ObservabilityConfig(_Model):
    access_log: str | None = "-"
    """Envoy JSON access log: "-" for stdout, a file path, or null for none."""
    ledger: bool = True
    """Append one usage record per request to the `sg:ledger` Redis Stream."""
    ledger_maxlen: int = Field(1_000_000, ge=1000)


class KeyConfig(_Model):
    id: str
    hash: str
    models: list[str] = Field(default_factory=lambda: ["*"])
    """Allow-list of client model names; `*` allows every model."""
    revoked: bool = False

    @field_validator("hash")
    @classmethod
    def _hash(cls, v: str) -> str:
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", v):
            raise ValueError("must be 'sha256:<64 hex>' (see `sidegate keys hash`)")
        return v


class TenantConfig(_Model):
    keys: list[KeyConfig] = Field(default_factory=list)
    quota: TenantQuota = Field(default_factory=TenantQuota)
    """rpm/tpm/daily_usd/monthly_usd for the tenant (seeded into the store at start, then managed
    live by `sidegate tenants limits` / the admin API), plus per-key and per-model overrides."""


class RouteDefaults(_Model):
    cache: CachePolicy = Field(default_factory=CachePolicy)
    guard: GuardPolicy | None = Field(default_factory=GuardPolicy)
    """Default guard: redact PII (restored in responses), block obvious prompt injections; null = off."""


class SidegateConfig(_Model):
    listener: ListenerConfig = Field(default_factory=ListenerConfig)
    services: ServicesConfig = Field(default_factory=ServicesConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    providers: dict[str, ProviderConfig]
    models: dict[str, ModelConfig]
    tenants: dict[str, TenantConfig] = Field(default_factory=dict)
    defaults: RouteDefaults = Field(default_factory=RouteDefaults)
    semantic: SemanticSettings = Field(default_factory=SemanticSettings)
    """Embedder + vector index of the semantic cache (process-wide)."""
    observability: ObservabilityConfig = Field(default_factory=ObservabilityConfig)
    quota: QuotaPolicy = Field(default_factory=QuotaPolicy)
    """Window, reservation TTL, tokenizer, default limits and the model price table."""

    def guard_policy(self, model: str) -> GuardPolicy | None:
        m = self.models.get(model)
        if m is None or m.guard == "default":
            return self.defaults.guard
        return m.guard

    def cache_policy(self, model: str) -> CachePolicy:
        m = self.models.get(model)
        return m.cache if m is not None and m.cache is not None else self.defaults.cache

    @model_validator(mode="after")
    def _references(self) -> SidegateConfig:
        if self.services.front == "http" and self.services.auth != "inline":
            raise ValueError("services.front: http authenticates in the front itself: it needs services.auth: inline")
        for name in [*self.providers, *self.tenants]:
            if not _NAME.match(name):
                raise ValueError(f"name {name!r} must match {_NAME.pattern}")
        for mname, model in self.models.items():
            for i, route in enumerate(model.routes):
                if route.provider not in self.providers:
                    raise ValueError(f"models.{mname}.routes.{i}.provider: unknown provider {route.provider!r}")
        seen: set[str] = set()
        for tname, tenant in self.tenants.items():
            for key in tenant.keys:
                if key.id in seen:
                    raise ValueError(f"tenants.{tname}.keys: duplicate key id {key.id!r}")
                seen.add(key.id)
        return self


class ConfigError(Exception):
    """A configuration problem, with the location of each error."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


_ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "SIDEGATE_REDIS_URL": ("store", "url"),
    "SIDEGATE_STORE_FAIL_MODE": ("store", "fail_mode"),
    "SIDEGATE_LISTEN_PORT": ("listener", "port"),
    "SIDEGATE_LISTEN_HOST": ("listener", "host"),
    "SIDEGATE_ADMIN_PORT": ("listener", "admin_port"),
    "SIDEGATE_ADMIN_HOST": ("listener", "admin_host"),
    "SIDEGATE_MAX_RESPONSE_BYTES": ("listener", "max_response_bytes"),
    "SIDEGATE_METRICS_HOST": ("services", "metrics_host"),
    "SIDEGATE_AUTHZ_PORT": ("services", "authz_port"),
    "SIDEGATE_EXTPROC_PORT": ("services", "extproc_port"),
    "SIDEGATE_FRONT_PORT": ("services", "front_port"),
    "SIDEGATE_METRICS_PORT": ("services", "metrics_port"),
    "SIDEGATE_INTERNAL_TOKEN_FILE": ("services", "internal_token_file"),
    "SIDEGATE_ACCESS_LOG": ("observability", "access_log"),
    "SIDEGATE_QDRANT_URL": ("semantic", "qdrant_url"),
}


def _apply_env(data: dict[str, Any], env: dict[str, str]) -> None:
    for var, path in _ENV_OVERRIDES.items():
        if var in env:
            node = data
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = env[var]


def parse(data: Any, source: str = "<config>", env: dict[str, str] | None = None) -> SidegateConfig:
    if not isinstance(data, dict):
        raise ConfigError(source, ["top level must be a mapping"])
    _apply_env(data, dict(os.environ) if env is None else env)
    try:
        return SidegateConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{loc}: {msg}")
        raise ConfigError(source, problems) from None


def load(path: str | Path, env: dict[str, str] | None = None) -> SidegateConfig:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(str(path), ["file not found"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(str(path), [f"{where}invalid YAML ({getattr(exc, 'problem', exc)})"]) from None
    return parse(data, str(path), env)
