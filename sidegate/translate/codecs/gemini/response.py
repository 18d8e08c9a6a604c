"""Gemini ``GenerateContentResponse`` answers <-> the canonical form: bodies here, SSE streams in
:mod:`.stream` (re-exported: the translator tables read ``StreamDecoder`` from this module)."""

from __future__ import annotations

from typing import Any

from sidegate.errors import GatewayError
from sidegate.translate.base import Usage
from sidegate.translate.codecs.form import Response, Text, Thinking, ToolCall
from sidegate.translate.codecs.gemini.shapes import (
    FAILED_FINISHES,
    FINISH_OUT,
    block_reason,
    failed_message,
    finish_in,
    first_candidate,
    gemini_usage,
    model_parts,
    parse_usage,
)
from sidegate.translate.codecs.gemini.stream import GeminiStreamDecoder, GeminiStreamEncoder
from sidegate.translate.common import as_dict, as_list, as_str

__all__ = ["GeminiStreamEncoder", "StreamDecoder", "decode_response", "encode_response"]


def decode_response(body: dict[str, Any]) -> Response:
    """A Gemini answer -> the form (first candidate: the form has one answer). A prompt blocked by
    Google's filters (no candidates, ``promptFeedback.blockReason``) or an answer cut by them is a
    refusal; a model failure with nothing generated (``MALFORMED_FUNCTION_CALL``...) is a 502."""
    response_id = as_str(body.get("responseId"))
    cand = first_candidate(body)
    content, ncalls = model_parts(as_list(as_dict(cand.get("content")).get("parts")), response_id)
    reason = as_str(cand.get("finishReason"))
    if not cand:
        if not block_reason(body):
            raise GatewayError(502, "The provider returned no candidates and no block reason.")
        stop = "refusal"
    else:
        if reason in FAILED_FINISHES and not content:
            raise GatewayError(502, failed_message(reason))
        stop = finish_in(reason, ncalls > 0)
    usage, thinking = parse_usage(body.get("usageMetadata"))
    return Response(
        response_id, as_str(body.get("modelVersion")), content, stop, None, usage or Usage(), thinking
    )


def _part(p: Any) -> dict[str, Any]:
    t = type(p)
    if t is Text:
        return {"text": p.text}
    if t is ToolCall:
        return {"functionCall": {"id": p.id, "name": p.name, "args": p.input}}
    assert t is Thinking
    # No thoughtSignature: another provider's signature means nothing to Gemini, and google-genai
    # refuses one that is not base64 (and re-encodes the rest), so it could not come back intact.
    return {"text": p.text, "thought": True}


def encode_response(resp: Response, created: int) -> dict[str, Any]:
    """The form -> a ``GenerateContentResponse`` for a Gemini client (``created`` is OpenAI's, unused).
    Thoughts are ``thought: true`` parts (google-genai leaves them out of ``response.text``)."""
    parts = [_part(p) for p in resp.content]
    return {
        "candidates": [
            {
                "content": {"role": "model", "parts": parts},
                "finishReason": FINISH_OUT[resp.stop],
                "index": 0,
            }
        ],
        "usageMetadata": gemini_usage(resp.usage, resp.thinking_tokens),
        "modelVersion": resp.model,
        "responseId": resp.id,
    }


StreamDecoder = GeminiStreamDecoder
