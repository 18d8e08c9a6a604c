"""One usage-ledger record (:class:`LedgerRecord`): its fields, its flat string map for the stream and
back, and how a finished request becomes one (:func:`record_from_completion`). The writer is
:mod:`sidegate.features.ledger.ledger` (which re-exports these names)."""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from sidegate.core.completion import ttft_seconds

if TYPE_CHECKING:
    from sidegate.core.completion import Completion


@dataclass(slots=True)
class LedgerRecord:
    """One completed request. ``latency_ms`` covers the whole request when the gateway put its wall
    clock start in ``meta["received_at"]``, else the final provider try; ``ttft_ms`` is None unless
    streamed. ``cache`` is the response-cache result (``none`` when no cache ran)."""

    ts: float
    request_id: str = ""
    tenant: str = ""
    key_id: str = ""
    team: str = ""
    """The team and user inside the tenant the request was charged to ("" = none)."""
    user: str = ""
    api: str = ""
    endpoint: str = "completions"
    """What was asked: `completions` or `embeddings` (records written before it existed: completions)."""
    model: str = ""
    provider: str = ""
    upstream_model: str = ""
    status: int = 0
    attempts: int = 0
    stream: bool = False
    aborted: bool = False
    cache: str = "none"
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    ttft_ms: float | None = None

    def to_fields(self) -> dict[str, str]:
        """Flat string map for XADD (None -> empty string)."""
        out: dict[str, str] = {}
        for k in _FIELD_NAMES:  # not dataclasses.asdict: it deep-copies (~0.1 ms per record)
            v = getattr(self, k)
            if v is None:
                out[k] = ""
            elif isinstance(v, bool):
                out[k] = "1" if v else "0"
            elif isinstance(v, float):
                out[k] = repr(round(v, 6))
            else:
                out[k] = str(v)
        return out

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _FIELD_NAMES}

    @classmethod
    def from_fields(cls, data: dict[Any, Any]) -> LedgerRecord:
        """Inverse of :meth:`to_fields`; tolerates missing and unknown fields (schema evolution)."""
        raw = {as_text(k): as_text(v) for k, v in data.items()}
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in raw:
                continue
            v = raw[f.name]
            kind = str(f.type)
            if kind == "bool":
                kwargs[f.name] = v == "1"
            elif kind == "int":
                kwargs[f.name] = int(v or 0)
            elif kind == "float":
                kwargs[f.name] = float(v or 0)
            elif kind == "float | None":
                kwargs[f.name] = float(v) if v else None
            else:
                kwargs[f.name] = v
        kwargs.setdefault("ts", 0.0)
        return cls(**kwargs)


_FIELD_NAMES = tuple(f.name for f in fields(LedgerRecord))


def as_text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def record_from_completion(c: Completion, cost_usd: float = 0.0, now: float | None = None) -> LedgerRecord:
    meta = c.meta
    wall = time.time() if now is None else now
    received = meta.get("received_at")
    if isinstance(received, (int, float)) and 0 < received <= wall:
        latency = (wall - float(received)) * 1000
    else:
        latency = max(c.ended_at - c.started_at, 0.0) * 1000
    ttft = ttft_seconds(c)
    usage = c.usage
    return LedgerRecord(
        ts=wall, request_id=str(meta.get("request_id", "")), tenant=str(meta.get("tenant", "")),
        key_id=str(meta.get("key_id", "")), team=str(meta.get("team", "")), user=str(meta.get("user", "")),
        api=str(meta.get("api", "")),
        endpoint=str(meta.get("endpoint") or "completions"), model=str(meta.get("model", "")),
        provider=c.provider, upstream_model=c.upstream_model, status=c.status, attempts=c.attempt,
        stream=bool(meta.get("stream", c.streamed)), aborted=c.aborted, cache=str(meta.get("cache") or "none"),
        input_tokens=usage.input_tokens if usage else 0, output_tokens=usage.output_tokens if usage else 0,
        cached_tokens=usage.cached_tokens if usage else 0,
        cache_creation_tokens=usage.cache_creation_tokens if usage else 0,
        cost_usd=cost_usd, latency_ms=round(latency, 3), ttft_ms=round(ttft * 1000, 3) if ttft is not None else None,
    )  # fmt: skip
