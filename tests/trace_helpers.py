"""Shared pieces of the trace e2e tests (tests/e2e/test_trace_envoy.py: Envoy's spans;
test_trace_spans.py: Sidegate's own). The OTLP receiver they export to is the e2e fixture
`receiver` (tests/e2e/conftest.py)."""

from __future__ import annotations

import secrets

SIDEGATE_SCOPE = "sidegate"
"""The instrumentation scope of Sidegate's own spans (Envoy's come from its tracer's)."""
SIDEGATE_CALL = {
    "ext_proc": "async envoy.service.ext_proc.v3.ExternalProcessor.Process egress",
    "http": "async sidegate_front egress",
}
"""Envoy's span of its call to the gateway stage, per front: the parent of Sidegate's root span."""
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "100"}
"""Sidegate's spans leave within 0.1 s (the SDK's default batch delay is 5 s): a test waits on spans
less, and none of one test's arrives in the next one's receiver."""


def client_traceparent(sampled: bool = True) -> tuple[str, str, str]:
    """(traceparent, trace id, span id) of a fresh client span."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}", trace_id, span_id
