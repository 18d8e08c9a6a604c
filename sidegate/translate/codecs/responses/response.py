"""OpenAI Responses answers <-> the canonical form: the ``response`` object (client side: encode;
provider side: decode); streams in :mod:`.stream`."""

from __future__ import annotations

from typing import Any

from sidegate.translate.base import Usage
from sidegate.translate.codecs.form import Response
from sidegate.translate.codecs.responses.decode import ResponsesStreamDecoder
from sidegate.translate.codecs.responses.shapes import (
    INCOMPLETE,
    IdFactory,
    envelope,
    new_id,
    output_items,
    output_parts,
    parse_responses_usage,
    responses_usage,
    stop_of,
)
from sidegate.translate.common import as_str


def decode_response(body: dict[str, Any]) -> Response:
    content = output_parts(body.get("output"))
    parsed = parse_responses_usage(body.get("usage"))
    usage, reasoning = parsed if parsed is not None else (Usage(), None)
    return Response(
        as_str(body.get("id")),
        as_str(body.get("model")),
        content,
        stop_of(body, content),
        None,
        usage,
        reasoning,
    )


def encode_response(
    resp: Response, created: int, *, ids: IdFactory = new_id, echo: dict[str, Any] | None = None
) -> dict[str, Any]:
    reason = INCOMPLETE.get(resp.stop)
    status = "incomplete" if reason else "completed"
    out = envelope(ids("resp"), resp.model, created, status, echo)
    if reason:
        out["incomplete_details"] = {"reason": reason}
    out["output"] = output_items(resp.content, ids, status)
    out["usage"] = responses_usage(resp.usage, resp.thinking_tokens)
    return out


StreamDecoder = ResponsesStreamDecoder
