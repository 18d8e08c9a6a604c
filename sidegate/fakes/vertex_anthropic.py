"""Anthropic's models on Vertex AI: `POST /v1/projects/P/locations/L/publishers/anthropic/models/M:rawPredict`
(`:streamRawPredict` for a stream). The body is the Messages API's, except that the model is in the
path (none in the body) and the API version in the body (`anthropic_version: vertex-2023-10-16`).
Token counting is one endpoint, `.../models/count-tokens:rawPredict`, the model in the body."""

from __future__ import annotations

import re
from typing import Any

VERTEX_ANTHROPIC_VERSION = "vertex-2023-10-16"
COUNT_TOKENS = "count-tokens"
_PATH = re.compile(
    r"^/v1/projects/[a-z0-9-]+/locations/[a-z0-9-]+/publishers/anthropic/models/([^/:]+):(rawPredict|streamRawPredict)$"
)


def vertex_anthropic(path: str) -> tuple[str, bool] | None:
    """(model, stream path) of a Vertex AI Anthropic path; None for any other path."""
    m = _PATH.match(path)
    return (m.group(1), m.group(2) == "streamRawPredict") if m else None


def messages_body(body: Any, model: str, stream_path: bool) -> tuple[Any, str | None]:
    """(the Messages API body it stands for, the 400 message Vertex would give, if any)."""
    if not isinstance(body, dict):
        return body, None  # the JSON checks that follow refuse it
    if body.get("anthropic_version") != VERTEX_ANTHROPIC_VERSION:
        return body, f"anthropic_version: Field required ({VERTEX_ANTHROPIC_VERSION!r} on Vertex AI)"
    if model == COUNT_TOKENS:
        if stream_path or not isinstance(body.get("model"), str):
            return body, "model: Field required"
        return {k: v for k, v in body.items() if k != "anthropic_version"}, None
    if "model" in body:
        return body, "model: Extra inputs are not permitted (the model is in the path on Vertex AI)"
    if bool(body.get("stream")) != stream_path:
        return body, "stream: must be true with :streamRawPredict and absent or false with :rawPredict"
    out = {k: v for k, v in body.items() if k != "anthropic_version"}
    out["model"] = model
    return out, None
