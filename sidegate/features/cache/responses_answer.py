"""Responses API answers in the cache: which may be stored, the whole answer from a stream, and a
hit replayed as a Responses JSON answer or as a Responses SSE stream.

A stream's `response.completed` (or `response.incomplete`) event carries the whole response, so the
fill needs no reassembly of deltas. A replay is a new response: a fresh `resp_` id and `created_at`,
the asking request's echoed fields (`metadata`, `user`...), output and usage as stored.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import orjson

from sidegate.config.cache import CachePolicy
from sidegate.sse import SseParser, encode_event

__all__ = [
    "reassemble_responses",
    "responses_json",
    "responses_refusal",
    "responses_sse",
]

_CALLS = frozenset({"function_call", "custom_tool_call"})
"""Output items the client's own code answers (cached when the policy caches tool calls)."""
_KEPT = frozenset({"message", "reasoning"})
_TERMINAL = frozenset({"response.completed", "response.incomplete"})
_FAILED = frozenset({"error", "response.failed"})


def responses_refusal(response: dict[str, Any], policy: CachePolicy) -> str | None:
    """Why a Responses answer must not be cached; None if it may. Finished answers only (as for
    chat, an answer cut at `max_output_tokens` is finished); built-in tools' calls (web search,
    code runs...) bring in the world outside the model, never cached."""
    if response.get("object") != "response":
        return "not_a_response"
    status = response.get("status")
    if status == "incomplete":
        details = response.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, dict) else None
        if reason != "max_output_tokens":
            return f"incomplete:{reason}"
    elif status != "completed":
        return f"status:{status}"
    output = response.get("output")
    if not isinstance(output, list) or not output:
        return "no_output"
    for item in output:
        itype = item.get("type") if isinstance(item, dict) else None
        if itype in _KEPT:
            continue
        if itype in _CALLS:
            if not policy.cache_tool_calls:
                return "tool_calls"
            continue
        return f"server_tool:{itype}"
    return None


def reassemble_responses(stream: bytes) -> dict[str, Any] | None:
    """The response a whole Responses stream ends with; None unless it ended well. Only the
    terminal event is parsed (events are told apart by their `event:` name, as OpenAI sends it)."""
    parser = SseParser()
    try:
        for ev in parser.feed(stream if stream.endswith(b"\n\n") else stream + b"\n\n"):
            name = ev.event
            if name in _FAILED:
                return None
            if name is not None and name not in _TERMINAL:
                continue
            data = orjson.loads(ev.data)
            etype = data.get("type") if isinstance(data, dict) else None
            if etype in _TERMINAL:
                response = data.get("response")
                return response if isinstance(response, dict) else None
            if etype in _FAILED:
                return None
    except orjson.JSONDecodeError:
        return None
    return None


def _refresh(response: dict[str, Any], echo: dict[str, Any] | None) -> dict[str, Any]:
    out = dict(response)
    out["id"] = "resp_" + secrets.token_hex(24)
    now = int(time.time())
    out["created_at"] = now
    if out.get("completed_at") is not None:
        out["completed_at"] = now
    for k, v in (echo or {}).items():
        if k in out or v is not None:
            out[k] = v
    return out


def responses_json(response: dict[str, Any], echo: dict[str, Any] | None = None) -> bytes:
    return orjson.dumps(_refresh(response, echo))


def responses_sse(response: dict[str, Any], echo: dict[str, Any] | None = None) -> bytes:
    """The whole answer as the Responses stream OpenAI sends: created, in_progress, each output item
    (added, its parts' or arguments' one delta and done events, done), then completed/incomplete."""
    resp = _refresh(response, echo)
    out: list[bytes] = []

    def event(name: str, data: dict[str, Any]) -> None:
        out.append(encode_event(name, orjson.dumps({"type": name, **data, "sequence_number": len(out)})))

    opening = {**resp, "status": "in_progress", "output": [], "usage": None, "incomplete_details": None}
    if "completed_at" in opening:
        opening["completed_at"] = None
    event("response.created", {"response": opening})
    event("response.in_progress", {"response": opening})
    for oi, item in enumerate(resp.get("output") or []):
        itype = item.get("type") if isinstance(item, dict) else None
        if itype == "message":
            _message(event, oi, item)
        elif itype == "function_call":
            args = item.get("arguments") or ""
            event(
                "response.output_item.added",
                {"output_index": oi, "item": {**item, "arguments": "", "status": "in_progress"}},
            )
            at = {"item_id": item.get("id", ""), "output_index": oi}
            event("response.function_call_arguments.delta", {**at, "delta": args})
            event("response.function_call_arguments.done", {**at, "arguments": args})
            event("response.output_item.done", {"output_index": oi, "item": item})
        else:  # reasoning and the rest: whole at once
            event("response.output_item.added", {"output_index": oi, "item": item})
            event("response.output_item.done", {"output_index": oi, "item": item})
    final = "response.incomplete" if resp.get("status") == "incomplete" else "response.completed"
    event(final, {"response": resp})
    return b"".join(out)


def _message(event: Any, oi: int, item: dict[str, Any]) -> None:
    event(
        "response.output_item.added",
        {"output_index": oi, "item": {**item, "content": [], "status": "in_progress"}},
    )
    for ci, part in enumerate(item.get("content") or []):
        if not isinstance(part, dict):
            continue
        at = {"item_id": item.get("id", ""), "output_index": oi, "content_index": ci}
        if part.get("type") == "refusal":
            event("response.content_part.added", {**at, "part": {"type": "refusal", "refusal": ""}})
            event("response.refusal.delta", {**at, "delta": part.get("refusal", "")})
            event("response.refusal.done", {**at, "refusal": part.get("refusal", "")})
        else:
            text = part.get("text", "")
            event("response.content_part.added", {**at, "part": {**part, "text": "", "annotations": []}})
            event("response.output_text.delta", {**at, "delta": text, "logprobs": []})
            event("response.output_text.done", {**at, "text": text, "logprobs": part.get("logprobs") or []})
        event("response.content_part.done", {**at, "part": part})
    event("response.output_item.done", {"output_index": oi, "item": item})
