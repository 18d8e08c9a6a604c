"""Sizes Envoy and the ext_proc service must agree on: the service accepts a gRPC message as large
as the bootstrap lets Envoy send it (a whole buffered answer, sidegate/bootstrap/buffers.py)."""

from __future__ import annotations

from sidegate.config import SidegateConfig

GRPC_FRAMING = 1024 * 1024
"""Room for a ProcessingRequest's headers and framing around a body of the largest size."""


def grpc_max_message(cfg: SidegateConfig) -> int:
    """The ext_proc service's largest accepted gRPC message (a whole buffered answer)."""
    return max(64 << 20, cfg.listener.max_response_bytes + GRPC_FRAMING)
