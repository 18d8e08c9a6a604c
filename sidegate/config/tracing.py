"""Tracing: where Envoy and Sidegate send their OpenTelemetry spans, how many, and what they may hold.

Off unless `endpoint` is set: nothing is rendered into Envoy's bootstrap and no exporter runs, so
an untraced deployment pays nothing and never reaches for the network. docs/observability.md,
"Traces".
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from sidegate.config.base import NAME_PATTERN, StrictModel

# host:port with a DNS name, an IPv4 address or a bracketed IPv6 address (what Envoy's socket
# address and a gRPC target both take apart without guessing).
_ENDPOINT = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):(?P<port>[0-9]{1,5})$")


class TracingConfig(StrictModel):
    endpoint: str | None = None
    """OTLP/gRPC collector as `host:port` (plain HTTP/2, e.g. an OpenTelemetry Collector's 4317);
    `http://host:port` is accepted too. None or "" = tracing off. Env SIDEGATE_OTLP_ENDPOINT."""
    sample_ratio: float = Field(1.0, ge=0.0, le=1.0)
    """Share of new traces recorded (0..1). Parent-based: a request whose client sent a sampled
    `traceparent` is recorded whatever the ratio, an unsampled one is not. Env
    SIDEGATE_TRACE_SAMPLE_RATIO."""
    service_name: str = Field("sidegate", min_length=1, max_length=128)
    """`service.name` of the spans (Envoy's and Sidegate's). Env SIDEGATE_TRACE_SERVICE_NAME."""
    content_tenants: list[str] = Field(default_factory=list)
    """Tenants whose prompt and completion content may be recorded in spans; `*` = every tenant.
    Empty (the default): no content in any span, only sizes, models and token counts."""
    timeout_s: float = Field(5.0, gt=0, le=60)
    """Longest wait for one export to the collector (Envoy's and Sidegate's exporters)."""

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is None:
            return None
        v = v.strip().removeprefix("http://").rstrip("/")
        if not v:
            return None  # an empty environment variable switches tracing off
        if v.startswith("https://"):
            raise ValueError("TLS to the collector is not supported: give a plain OTLP/gRPC host:port")
        m = _ENDPOINT.match(v)
        if m is None or not 0 < int(m["port"]) < 65536:
            raise ValueError(f"must be host:port of an OTLP/gRPC collector, got {v!r}")
        return v

    @field_validator("content_tenants")
    @classmethod
    def _tenants(cls, v: list[str]) -> list[str]:
        for name in v:
            if name != "*" and not NAME_PATTERN.match(name):
                raise ValueError(f"tenant {name!r} must be '*' or match {NAME_PATTERN.pattern}")
        return v

    @property
    def enabled(self) -> bool:
        return self.endpoint is not None

    @property
    def host(self) -> str:
        """The collector's host, without an IPv6 address's brackets (as Envoy's socket address wants it)."""
        assert self.endpoint is not None
        return self.endpoint.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        assert self.endpoint is not None
        return int(self.endpoint.rsplit(":", 1)[1])

    def records_content(self, tenant: str | None) -> bool:
        """Whether prompt and completion content of `tenant`'s requests may go into spans."""
        if not self.content_tenants:
            return False
        return "*" in self.content_tenants or (tenant is not None and tenant in self.content_tenants)
