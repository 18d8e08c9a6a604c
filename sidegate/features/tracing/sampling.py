"""Which requests are traced, and the W3C trace context they carry to their tries.

The decision is ParentBased(TraceIdRatioBased(ratio)), the SDK's own sampler, taken once per
request at the gateway: a request under a `traceparent` follows its sampled flag, any other starts
a trace of its own, recorded when its trace id falls under the ratio's bound (the SDK's
TraceIdRatioBased bound, so a collector's tail sampler agrees). It is taken by hand on the parsed
header because the SDK's sampler wants a Context and a parent span object per call; the result is
the same and an unsampled request pays a slice and a comparison.
"""

from __future__ import annotations

import random
from typing import NamedTuple

from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

SAMPLED = 0x01
_TRACE_ID_LOW = (1 << 64) - 1


class TraceIds(NamedTuple):
    """A sampled request's ids: its trace, the root span Sidegate records for it, the root's parent
    (0: the root starts the trace)."""

    trace_id: int
    root_id: int
    parent_id: int


def parse_traceparent(value: str) -> tuple[int, int, int] | None:
    """`00-<trace>-<span>-<flags>` -> (trace id, span id, flags); None if it is not one (an invalid
    header starts a new trace, as W3C says)."""
    if len(value) < 55 or value[2] != "-" or value[35] != "-" or value[52] != "-":
        return None
    try:
        version = int(value[0:2], 16)
        trace_id = int(value[3:35], 16)
        span_id = int(value[36:52], 16)
        flags = int(value[53:55], 16)
    except ValueError:
        return None
    if version == 0xFF or (version == 0 and len(value) != 55) or not trace_id or not span_id:
        return None
    return trace_id, span_id, flags


def format_traceparent(trace_id: int, span_id: int) -> str:
    """The W3C header of a sampled span (version 00)."""
    return f"00-{trace_id:032x}-{span_id:016x}-01"


def _random_id(bits: int) -> int:
    while True:
        value = random.getrandbits(bits)
        if value:
            return value


class Sampler:
    """Parent-based on the request's `traceparent`, else `ratio` of the new traces."""

    def __init__(self, ratio: float):
        self.bound = TraceIdRatioBased(ratio).bound
        """Trace ids whose low 64 bits are under it are sampled (the SDK's rule)."""

    def sample(self, traceparent: str) -> TraceIds | None:
        """The ids of the trace to record for a request, or None (not sampled)."""
        if traceparent:
            if len(traceparent) == 55 and traceparent[53:55] == "00":  # the usual unsampled parent: no parse
                return None
            parent = parse_traceparent(traceparent)
            if parent is not None:
                trace_id, parent_id, flags = parent
                if not flags & SAMPLED:
                    return None
                return TraceIds(trace_id, _random_id(64), parent_id)
        if not self.bound:
            return None
        trace_id = _random_id(128)
        if trace_id & _TRACE_ID_LOW >= self.bound:
            return None
        return TraceIds(trace_id, _random_id(64), 0)
