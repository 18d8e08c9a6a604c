"""The routing document: the part of the configuration that changes live (docs/control-plane.md).

Providers (with their credentials' references, never the secrets), models (chains, weights, retry
and timeout policies, routing policy, cache and guard policies), the price table and the default
cache and guard policies. It is seeded from the config file, kept in the store as versioned
documents (sidegate/routingstore.py) and served to Envoy over xDS; everything else in the file
(listener, services, store, tenants' seeds, JWT issuers, observability) is the process's shape.

A document is only ever accepted as part of a whole configuration: :func:`with_routing` puts it
into the file's configuration and validates the result, so a change that names an unknown provider
or breaks any other rule is refused with its location, and nothing running sees it.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson
from pydantic import Field, ValidationError

from sidegate.config.base import StrictModel
from sidegate.config.pricing import Price
from sidegate.config.providers import ModelConfig, ProviderConfig
from sidegate.config.root import ConfigError, RouteDefaults, SidegateConfig

SECTIONS = ("providers", "models", "prices", "defaults")
"""The document's top-level keys. `prices` is the config file's `quota.prices`."""


class RoutingDoc(StrictModel):
    """One version of the routing document (its JSON form is what the store keeps)."""

    providers: dict[str, ProviderConfig]
    models: dict[str, ModelConfig]
    prices: dict[str, Price] = Field(default_factory=dict)
    defaults: RouteDefaults = Field(default_factory=RouteDefaults)


def routing_doc(cfg: SidegateConfig) -> dict[str, Any]:
    """The routing document of a configuration, as JSON-ready data (defaults left out, so a
    document stays as short as the file that seeded it)."""
    doc = RoutingDoc(
        providers=cfg.providers, models=cfg.models, prices=cfg.quota.prices, defaults=cfg.defaults
    )
    return doc.model_dump(mode="json", exclude_defaults=True)


_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "x-goog-api-key"}
)
_SECRET_VALUE = re.compile(r"^(bearer\s+)?(sk-|sk_|AKIA|AIza|xai-|gsk_)", re.IGNORECASE)


def inline_secrets(doc: dict[str, Any]) -> list[str]:
    """Where a provider's extra headers carry a credential inline (unknown fields such as
    ``api_key`` are refused by the schema already). The store and its history are readable by
    every global viewer: a provider names its credentials by reference (``api_key_env``,
    ``api_key_envs``, the cloud auth blocks), never by value. The value is never repeated."""
    out = []
    for pname, prov in (doc.get("providers") or {}).items():
        for header, value in ((prov or {}).get("headers") or {}).items():
            if header.lower() in _SECRET_HEADERS or _SECRET_VALUE.match(str(value)):
                out.append(f"providers.{pname}.headers.{header}: looks like an inline credential; "
                           "name it by reference (api_key_env, api_key_envs or a cloud auth block)")  # fmt: skip
    return out


def digest(doc: dict[str, Any]) -> str:
    """A document's identity (sha256 of its canonical JSON): equal documents, equal digests."""
    return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()


def with_routing(base: SidegateConfig, doc: dict[str, Any], source: str = "routing") -> SidegateConfig:
    """`base` with its routing sections replaced by `doc`'s, validated as a whole.

    Raises ConfigError naming each problem's location inside the document (`models.x.routes.0.provider:
    unknown provider 'y'`); the caller's running configuration is untouched either way."""
    if not isinstance(doc, dict):
        raise ConfigError(source, ["the routing document must be a mapping"])
    unknown = sorted(set(doc) - set(SECTIONS))
    if unknown:
        raise ConfigError(
            source, [f"{k}: not a routing section (expected one of {', '.join(SECTIONS)})" for k in unknown]
        )
    try:
        parsed = RoutingDoc.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError(source, _problems(exc)) from None
    quota = base.quota.model_copy(update={"prices": parsed.prices})
    data = base.model_dump(round_trip=True)
    data.update(providers=parsed.providers, models=parsed.models, defaults=parsed.defaults, quota=quota)
    try:
        return SidegateConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, _problems(exc)) from None


def _problems(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        msg = err["msg"].removeprefix("Value error, ")
        loc = ".".join(str(p) for p in err["loc"])
        out.append(f"{loc}: {msg}" if loc else msg)  # a whole-config rule names its place itself
    return out
