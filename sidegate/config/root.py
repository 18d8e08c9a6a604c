"""The one place for configuration: a typed, validated model loaded from YAML with env overrides.

Secrets never live in the YAML: providers name the environment variable that holds their key.
Tenant API keys appear only as hashes (see :mod:`sidegate.keys`).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from sidegate.config.admin import AdminConfig
from sidegate.config.base import NAME_PATTERN, StrictModel
from sidegate.config.cache import CachePolicy, SemanticSettings
from sidegate.config.guard import GuardPolicy
from sidegate.config.jwt import JwtConfig
from sidegate.config.org import TeamConfig, UserConfig, check_references
from sidegate.config.providers import ModelConfig, ProviderConfig
from sidegate.config.quota import QuotaPolicy, TenantQuota
from sidegate.config.responses import ResponsesConfig
from sidegate.config.services import ListenerConfig, ObservabilityConfig, ServicesConfig, StoreConfig


class KeyConfig(StrictModel):
    id: str
    hash: str
    models: list[str] = Field(default_factory=lambda: ["*"])
    """Allow-list of client model names; `*` allows every model."""
    revoked: bool = False
    team: str | None = None
    """The team (of this tenant's `teams`) the key belongs to; its limits and allow-list apply too."""
    user: str | None = None
    """The user (of this tenant's `users`) the key belongs to, likewise."""

    @field_validator("hash")
    @classmethod
    def _hash(cls, v: str) -> str:
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", v):
            raise ValueError("must be 'sha256:<64 hex>' (see `sidegate keys hash`)")
        return v


class TenantConfig(StrictModel):
    keys: list[KeyConfig] = Field(default_factory=list)
    quota: TenantQuota = Field(default_factory=TenantQuota)
    """rpm/tpm/daily_usd/monthly_usd for the tenant (seeded into the store at start, then managed
    live by `sidegate tenants limits` / the admin API), plus per-key and per-model overrides."""
    teams: dict[str, TeamConfig] = Field(default_factory=dict)
    users: dict[str, UserConfig] = Field(default_factory=dict)


class RouteDefaults(StrictModel):
    cache: CachePolicy = Field(default_factory=CachePolicy)
    guard: GuardPolicy | None = Field(default_factory=GuardPolicy)
    """Default guard: redact PII (restored in responses), block obvious prompt injections; null = off."""


class SidegateConfig(StrictModel):
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
    responses: ResponsesConfig = Field(default_factory=ResponsesConfig)
    """The Responses answers the gateway keeps (previous_response_id, GET/DELETE /v1/responses/{id})."""
    jwt: JwtConfig = Field(default_factory=JwtConfig)
    """JWT callers: issuers whose tokens are accepted beside the API keys (sidegate/config/jwt.py)."""
    admin: AdminConfig = Field(default_factory=AdminConfig)
    """Admin API: roles' sign-in (OIDC) and the audit log (sidegate/config/admin.py)."""

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
            if not NAME_PATTERN.match(name):
                raise ValueError(f"name {name!r} must match {NAME_PATTERN.pattern}")
        for mname, model in self.models.items():
            for i, route in enumerate(model.routes):
                if route.provider not in self.providers:
                    raise ValueError(f"models.{mname}.routes.{i}.provider: unknown provider {route.provider!r}")
        seen: set[str] = set()
        for tname, tenant in self.tenants.items():
            check_references(tname, tenant.teams, tenant.users, tenant.keys)
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
    "SIDEGATE_MAX_REQUEST_BYTES": ("listener", "max_request_bytes"),
    "SIDEGATE_MAX_RESPONSE_BYTES": ("listener", "max_response_bytes"),
    "SIDEGATE_METRICS_HOST": ("services", "metrics_host"),
    "SIDEGATE_AUTHZ_PORT": ("services", "authz_port"),
    "SIDEGATE_EXTPROC_PORT": ("services", "extproc_port"),
    "SIDEGATE_FRONT_PORT": ("services", "front_port"),
    "SIDEGATE_GRPC_SERVER": ("services", "grpc_server"),
    "SIDEGATE_LEAN_PORT": ("services", "lean_port"),
    "SIDEGATE_XDS_PORT": ("services", "xds_port"),
    "SIDEGATE_METRICS_PORT": ("services", "metrics_port"),
    "SIDEGATE_INTERNAL_TOKEN_FILE": ("services", "internal_token_file"),
    "SIDEGATE_ACCESS_LOG": ("observability", "access_log"),
    "SIDEGATE_QDRANT_URL": ("semantic", "qdrant_url"),
    "SIDEGATE_OTLP_ENDPOINT": ("observability", "tracing", "endpoint"),
    "SIDEGATE_TRACE_SAMPLE_RATIO": ("observability", "tracing", "sample_ratio"),
    "SIDEGATE_TRACE_SERVICE_NAME": ("observability", "tracing", "service_name"),
}


def _apply_env(data: dict[str, Any], env: dict[str, str]) -> None:
    for var, path in _ENV_OVERRIDES.items():
        if var in env:
            node = data
            for part in path[:-1]:
                if node.get(part) is None:  # absent, or a section left empty (`observability:`)
                    node[part] = {}
                node = node[part]
                if not isinstance(node, dict):
                    break  # not a mapping: validation says so, at its place in the file
            else:
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


def load_or_exit(path: str | Path) -> SidegateConfig:
    """`load` for a command line: an invalid file is reported on stderr, one problem a line, and the
    process exits with status 2 (no traceback: the problems are the whole story)."""
    try:
        return load(path)
    except ConfigError as exc:
        print(f"{exc.source}: invalid configuration", file=sys.stderr)
        for p in exc.problems:
            print(f"  - {p}", file=sys.stderr)
        raise SystemExit(2) from None
