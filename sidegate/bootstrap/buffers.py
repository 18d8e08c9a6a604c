"""Envoy's buffer limits for large non-streaming answers (`listener.max_response_bytes`).

Envoy 1.40 behaviours that set these numbers (measured; docs/architecture.md, "Limits"):

- A stream has ONE buffer limit for both directions: the listener's
  `per_connection_buffer_limit_bytes` (1 MiB by default), which any filter may change with
  `setDecoderBufferLimit` (the HTTP front's ext_authz sets its `max_request_bytes`). Every filter
  that buffers a whole answer (the per-try ext_proc in BUFFERED mode and the try lane's Lua, which
  are upstream filters and inherit it; json_to_metadata on the router) is bounded by it.
- Past that limit a buffering filter gets a local 500 (details `response_payload_too_large`),
  made a 502 in the client's format here. A filter that holds data with a watermark instead
  (StopIterationAndWatermark) raises the watermark: in the upstream filter manager Envoy 1.40 dies
  on it (SIGSEGV). The per-try ext_proc does that with body data that arrives while it waits for
  its answer to the response headers, and passes on the watermarks of its gRPC stream to the
  ext_proc service: the connection's write buffer (the gRPC cluster's
  `per_connection_buffer_limit_bytes`, 1 MiB by default) and the HTTP/2 stream's send buffer
  (sized by the stream window, 16 MiB by default), which one buffered answer (one gRPC message)
  fills. A client reading slower than Envoy writes raises the downstream write watermark (the
  listener's limit), which also reaches the upstream filter manager.

So: the listener's limit is `max_response_bytes` (plus the head), so one whole answer fits in the
client connection's write buffer; after the gateway/front filter has accepted the request, a
`buffer` filter (it calls `setDecoderBufferLimit`; the request is already whole) sets the stream's
limit to it again (the HTTP front's ext_authz lowered it to its request cap); a Lua upstream filter
between the per-try ext_proc and the codec buffers a non-streaming answer whole first (over the
limit: the safe local 500), so the ext_proc never holds more than the limit; the ext_proc
connection's watermarks are out of reach (four whole answers).
"""

from __future__ import annotations

from typing import Any

from sidegate import lua
from sidegate.config import SidegateConfig
from sidegate.sizes import GRPC_FRAMING

TOO_LARGE_DETAILS = "response_payload_too_large"
"""Envoy's response code details when a buffering filter's answer outgrew the stream's limit."""

HEAD_SLACK = 1024 * 1024
"""Room for an answer's head and framing in the client connection's write buffer."""

EXTPROC_INFLIGHT = 4
"""Whole answers that may sit in Envoy's write buffer towards one ext_proc connection at once."""


def whole_answer_filter() -> dict[str, Any]:
    """Per-try upstream filter after the ext_proc: a non-streaming provider answer is buffered whole
    (over the stream's limit: Envoy's local 500, made a 502) before the ext_proc sees its headers;
    a body the ext_proc replaced at request headers (a prepared stream) gets its content-length back."""
    return {
        "name": "sidegate.whole_answer",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": lua.read("envoy_whole_answer.lua")},
        },
    }


ANSWER_LIMIT_FILTER = "sidegate.answer_limit"


def answer_limit_filter(cfg: SidegateConfig) -> dict[str, Any]:
    """After the gateway/front filter: the stream's buffer limit becomes the answers' limit. The
    request body is whole by then (the gateway buffered it under the request limits), so this
    filter holds nothing and copies nothing."""
    return {
        "name": ANSWER_LIMIT_FILTER,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
            "max_request_bytes": cfg.listener.max_response_bytes,
        },
    }


def listener_buffer_limit(cfg: SidegateConfig) -> int:
    """The client connection's buffers (and each stream's starting limit): a whole answer fits in
    its write buffer, so writing one never raises the downstream watermark (which Envoy passes to
    the upstream filter manager: SIGSEGV with the per-try ext_proc in the chain). The slack is for
    the response head and the framing."""
    return cfg.listener.max_response_bytes + HEAD_SLACK


def extproc_connection_limit(cfg: SidegateConfig) -> int:
    """Write-buffer watermark of Envoy's connections to the ext_proc service (never to be reached)."""
    return EXTPROC_INFLIGHT * (cfg.listener.max_response_bytes + GRPC_FRAMING)


def limit_extproc_buffers(cluster: dict[str, Any], cfg: SidegateConfig) -> None:
    """Envoy's gRPC cluster to the ext_proc service: its connection write buffer and each HTTP/2
    stream's send buffer (Envoy sizes that one by the stream window) hold whole answers without
    reaching a watermark."""
    limit = extproc_connection_limit(cfg)
    cluster["per_connection_buffer_limit_bytes"] = limit
    opts = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    opts["explicit_http_config"]["http2_protocol_options"] = {
        "initial_stream_window_size": limit, "initial_connection_window_size": limit,
    }  # fmt: skip


def too_large_bodies() -> tuple[str, str]:
    """(Anthropic, OpenAI) error bodies for an answer over the limit (a 502: the provider's doing)."""
    msg = "The provider's answer is larger than this gateway's limit (listener.max_response_bytes)."
    return ('{"type":"error","error":{"type":"api_error","message":"' + msg + '"}}',
            '{"error":{"message":"' + msg + '","type":"server_error","param":null,"code":"response_too_large"}}')  # fmt: skip
