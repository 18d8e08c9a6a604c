"""The W3C `traceparent` the adapters take from Envoy (or the client) for a request and its tries.

Only a well-formed value is ever used: anything else (a client's typo or an attempt to smuggle
text into span links) is ignored as if absent, so Sidegate's spans start a trace of their own
rather than join a broken one. https://www.w3.org/TR/trace-context/#traceparent-header
"""

from __future__ import annotations

import re

HEADER = "traceparent"
"""The header (and gRPC metadata key) Envoy injects its span's context into, and clients send."""

TRY_KEY = "try_traceparent"
"""Per-try metadata key (`ProviderTry.meta`, so `Completion.meta`): Envoy's span of this try
(ext_proc lane: the router's upstream span; try lane: the Lua's call to the try stage), which this
try's Sidegate span links to (the span itself is a child of the request's root). Absent when Envoy
gives nothing of the try's own (not tracing, a prepared first try)."""

ROOT_KEY = "trace_root"
"""Metadata of a traced request: the root span's parent span id (hex; "" when the root starts the
trace). Its presence says Sidegate records this request; `traceparent` then names the root."""
CONTENT_KEY = "trace_content"
"""Metadata of a traced request of a content tenant: its tries record prompt and completion, so
neither the direct lane nor the unchanged-body shortcut may take them (the lane, the per-try stage)."""

# version-traceid-parentid-flags, lowercase hex; a later version may append "-..." fields.
_FORMAT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def valid_traceparent(value: str | bytes | None) -> str:
    """`value` as a version-00 traceparent if it is a valid one, else "" (never raises)."""
    if not value:
        return ""
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return ""
    m = _FORMAT.fullmatch(value.strip(" \t"))
    if m is None:
        return ""
    version, trace_id, span_id, flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return ""
    return f"00-{trace_id}-{span_id}-{flags}"


def sampled(traceparent: str) -> bool:
    """Whether a valid traceparent's sampled flag is set (the parent-based sampling decision)."""
    return bool(traceparent) and int(traceparent[53:55], 16) & 1 == 1


def set_try_parent(meta: dict[str, object], value: str | bytes | None) -> None:
    """Note Envoy's span of this try (`value`: what the try's adapter received) in the try's `meta`
    under TRY_KEY, if it is valid and not simply the request's own parent (Envoy not tracing: the
    client's traceparent travels on unchanged)."""
    tp = valid_traceparent(value)
    if tp and tp != meta.get(HEADER):
        meta[TRY_KEY] = tp
