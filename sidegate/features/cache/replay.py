"""Render a cached (canonical, non-streaming) response for the client: JSON, or SSE in its API's shape.

Each replay gets a fresh id (and, for OpenAI, a fresh `created`): clients and log pipelines use ids to
tell responses apart, and a hit is a new response. Everything else, usage included, is replayed as
stored; the caller must count zero provider tokens for a hit.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import orjson

from sidegate.errors import Api
from sidegate.sse import encode_data, encode_event

from .gemini_answer import gemini_json, gemini_sse
from .responses_answer import responses_json, responses_sse

__all__ = ["fresh_id", "json_answer", "replay_answer", "sse_answer"]


def fresh_id(api: Api) -> str:
    return ("msg_" if api is Api.ANTHROPIC else "chatcmpl-") + secrets.token_hex(12)


def _refresh(api: Api, response: dict[str, Any]) -> dict[str, Any]:
    out = dict(response)
    out["id"] = fresh_id(api)
    if api is Api.OPENAI:
        out["created"] = int(time.time())
    return out


def json_answer(api: Api, response: dict[str, Any]) -> bytes:
    return orjson.dumps(_refresh(api, response))


def sse_answer(api: Api, response: dict[str, Any], include_usage: bool = False) -> bytes:
    """The whole stream as one body (`text/event-stream`)."""
    resp = _refresh(api, response)
    if api is Api.ANTHROPIC:
        return _anthropic_sse(resp)
    return _openai_sse(resp, include_usage)


def replay_answer(
    api: Api, response: dict[str, Any], *, stream: bool, include_usage: bool = False,
    echo: dict[str, Any] | None = None,
) -> tuple[bytes, str]:  # fmt: skip
    """(body, content-type) for a client that did or did not ask to stream. `echo`: the asking
    request's fields a Responses answer echoes."""
    if api is Api.RESPONSES:
        if stream:
            return responses_sse(response, echo), "text/event-stream"
        return responses_json(response, echo), "application/json"
    if api is Api.GEMINI:
        return (gemini_sse(response), "text/event-stream") if stream else (gemini_json(response), "application/json")
    if stream:
        return sse_answer(api, response, include_usage), "text/event-stream"
    return json_answer(api, response), "application/json"


def _openai_sse(resp: dict[str, Any], include_usage: bool) -> bytes:
    base: dict[str, Any] = {
        "id": resp.get("id"),
        "object": "chat.completion.chunk",
        "created": resp.get("created"),
        "model": resp.get("model"),
    }
    for k in ("system_fingerprint", "service_tier"):
        if resp.get(k) is not None:
            base[k] = resp[k]
    if include_usage:
        base["usage"] = None
    out: list[bytes] = []

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> None:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        out.append(encode_data(orjson.dumps({**base, "choices": [choice]})))

    for i, choice in enumerate(resp.get("choices") or []):
        index = choice.get("index", i)
        msg = choice.get("message") or {}
        chunk(index, {"role": msg.get("role", "assistant"), "content": ""})
        if msg.get("content"):
            chunk(index, {"content": msg["content"]})
        if msg.get("refusal"):
            chunk(index, {"refusal": msg["refusal"]})
        for n, call in enumerate(msg.get("tool_calls") or []):
            fn = call.get("function") or {}
            delta_call = {
                "index": n,
                "id": call.get("id"),
                "type": call.get("type", "function"),
                "function": {"name": fn.get("name"), "arguments": fn.get("arguments", "")},
            }
            chunk(index, {"tool_calls": [delta_call]})
        if msg.get("function_call"):
            chunk(index, {"function_call": msg["function_call"]})
        chunk(index, {}, choice.get("finish_reason"))
    if include_usage:
        out.append(encode_data(orjson.dumps({**base, "choices": [], "usage": resp.get("usage")})))
    out.append(b"data: [DONE]\n\n")
    return b"".join(out)


def _anthropic_sse(resp: dict[str, Any]) -> bytes:
    out: list[bytes] = []

    def event(name: str, data: dict[str, Any]) -> None:
        out.append(encode_event(name, orjson.dumps({"type": name, **data})))

    usage = dict(resp.get("usage") or {})
    start_usage = {**usage, "output_tokens": min(1, int(usage.get("output_tokens") or 0))}
    message = {
        "id": resp.get("id"),
        "type": "message",
        "role": resp.get("role", "assistant"),
        "content": [],
        "model": resp.get("model"),
        "stop_reason": None,
        "stop_sequence": None,
        "usage": start_usage,
    }
    event("message_start", {"message": message})
    for i, block in enumerate(resp.get("content") or []):
        btype = block.get("type")
        if btype == "text":
            event("content_block_start", {"index": i, "content_block": {"type": "text", "text": ""}})
            if block.get("text"):
                event(
                    "content_block_delta",
                    {"index": i, "delta": {"type": "text_delta", "text": block["text"]}},
                )
            for cit in block.get("citations") or []:
                event(
                    "content_block_delta", {"index": i, "delta": {"type": "citations_delta", "citation": cit}}
                )
        elif btype in ("tool_use", "server_tool_use"):
            event("content_block_start", {"index": i, "content_block": {**block, "input": {}}})
            partial = orjson.dumps(block.get("input") or {}).decode()
            event(
                "content_block_delta",
                {"index": i, "delta": {"type": "input_json_delta", "partial_json": partial}},
            )
        elif btype == "thinking":
            start = {"type": "thinking", "thinking": "", "signature": ""}
            event("content_block_start", {"index": i, "content_block": start})
            if block.get("thinking"):
                delta = {"type": "thinking_delta", "thinking": block["thinking"]}
                event("content_block_delta", {"index": i, "delta": delta})
            if block.get("signature"):
                delta = {"type": "signature_delta", "signature": block["signature"]}
                event("content_block_delta", {"index": i, "delta": delta})
        else:  # redacted_thinking, tool results...: whole block at start, as the API does
            event("content_block_start", {"index": i, "content_block": block})
        event("content_block_stop", {"index": i})
    delta_usage = {"output_tokens": int(usage.get("output_tokens") or 0)}
    for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "server_tool_use"):
        if usage.get(k) is not None:
            delta_usage[k] = usage[k]
    delta = {"stop_reason": resp.get("stop_reason"), "stop_sequence": resp.get("stop_sequence")}
    event("message_delta", {"delta": delta, "usage": delta_usage})
    event("message_stop", {})
    return b"".join(out)
