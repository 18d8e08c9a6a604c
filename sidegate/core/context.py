"""Per-request state shared by the features' request hooks, and what travels to the per-try stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from sidegate.config import ModelConfig, SidegateConfig
from sidegate.envoy_pb import struct_to_dict
from sidegate.errors import Api
from sidegate.wire import AUTHZ_NS, FRONT_META_HEADER, META_NS


@dataclass(slots=True)
class Reply:
    """An answer produced by the gateway itself (Envoy ImmediateResponse)."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    source: str = "gateway"
    """Who answered, for metrics and the ledger: `gateway` (a refusal) or `cache` (a hit)."""


@dataclass(slots=True)
class RequestContext:
    """State of one client request as it walks the features' request hooks."""

    path: str
    method: str
    headers: dict[str, str]
    api: Api = Api.OPENAI
    endpoint: str = "completions"
    """What is asked for (sidegate/core/intake.py: `completions`, `models`): which features see it."""
    request_id: str = ""
    source: str = ""
    """Client address as Envoy saw it (inline auth throttles failures per source)."""
    traceparent: str = ""
    """W3C trace context of the span this request's Sidegate spans hang under (Envoy's span, or
    the client's when Envoy does not trace); empty: no trace. Set by the adapters."""
    # auth (from ext_authz metadata)
    tenant: str = ""
    key_id: str = ""
    allowed_models: tuple[str, ...] = ()
    team: str = ""
    """Team inside the tenant ("" = none): from the key's record or the caller's JWT claims."""
    user: str = ""
    """User inside the tenant ("" = none), likewise."""
    # parse
    raw_body: bytes = b""
    body: dict[str, Any] = field(default_factory=dict)
    model: str = ""
    stream: bool = False
    client_wants_usage: bool = False
    config: SidegateConfig | None = None
    """The routing version this request is routed with (`x-sidegate-config-version`, set by
    Envoy's route table): None is the latest, the one the features hold (sidegate/core/live.py)."""
    routing_version: int = 0
    """Its number when the request named one (0: none named, the latest)."""
    # route
    model_config: ModelConfig | None = None
    route: str = ""
    """Value of the route header: the model, or `model#N` to start its chain at priority group N."""
    # set by features that rewrite the request body (e.g. PII redaction)
    body_changed: bool = False
    # metadata forwarded to the per-try stage (namespace `sidegate`)
    meta: dict[str, Any] = field(default_factory=dict)
    # request headers to remove before anything goes upstream (inline auth: the client's key)
    remove_headers: list[str] = field(default_factory=list)
    # response headers the gateway wants the client to see (e.g. rate-limit headers)
    response_headers: dict[str, str] = field(default_factory=dict)
    # started by a feature's `prefetch` for its own `on_request` (see sidegate/core/feature.py)
    prefetched: dict[str, Any] = field(default_factory=dict)

    def upstream_meta(self) -> dict[str, Any]:
        """What the per-try stage needs (Envoy dynamic metadata: JSON-like values only)."""
        return {
            "api": self.api.value,
            "model": self.model,
            "stream": self.stream,
            "want_usage": self.client_wants_usage,
            "tenant": self.tenant,
            "key_id": self.key_id,
            "request_id": self.request_id,
            **({"team": self.team} if self.team else {}),
            **({"user": self.user} if self.user else {}),
            **({"traceparent": self.traceparent} if self.traceparent else {}),
            **self.meta,
        }


def request_meta(filter_metadata: Any) -> dict[str, Any] | None:
    """The gateway's metadata for this request from Envoy's dynamic metadata: the `sidegate`
    namespace (ext_proc front) or the HTTP front's JSON header (ext_authz namespace); None if the
    gateway did not run."""
    if META_NS in filter_metadata:
        return struct_to_dict(filter_metadata[META_NS])
    if AUTHZ_NS in filter_metadata:
        fields = filter_metadata[AUTHZ_NS].fields
        if FRONT_META_HEADER in fields:
            meta = orjson.loads(fields[FRONT_META_HEADER].string_value)
            return meta if isinstance(meta, dict) else None
    return None
