"""OpenAI Responses API wire format: `response` objects and their SSE events (`event:` + `data:` lines).

The answer itself comes from the chat fake (`build_answer` on a chat-shaped view of the request), so a
Responses request gets the same "Echo: <last user text>", scripted content, tool calls and usage.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import orjson

from sidegate.fakes.answer import Answer, build_answer
from sidegate.fakes.behavior import Behavior
from sidegate.fakes.text import split_pieces, split_words

__all__ = ["build", "error_event", "new_id", "response_body", "stream_events"]

_WORD = re.compile(r"\s*\S+")
_REASONING_TOKENS = 16  # what a reasoning item "costs" when the request asks for reasoning
# Why an answer stopped early, as `incomplete_details.reason` (finish reasons in OpenAI spelling).
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def new_id() -> str:
    return "resp_" + uuid.uuid4().hex + uuid.uuid4().hex[:18]


def _item_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex + uuid.uuid4().hex[:18]


def chat_view(body: dict[str, Any]) -> dict[str, Any]:
    """The request as the chat fake reads it: `input` items as messages, `instructions` as system.

    A `function_call_output` counts as user text, so the answer after a tool round trip echoes the
    tool's output; only function tools can be called ("auto" tool calls skip built-in tools)."""
    messages: list[dict[str, Any]] = []
    given = body.get("input")
    if isinstance(given, str):
        messages.append({"role": "user", "content": given})
    elif isinstance(given, list):
        for item in given:
            if not isinstance(item, dict):
                continue
            kind = item.get("type")
            if kind == "function_call_output":
                messages.append({"role": "user", "content": item.get("output")})
            elif kind == "function_call":
                messages.append({"role": "assistant", "content": item.get("arguments")})
            elif kind in (None, "message") and isinstance(item.get("role"), str):
                messages.append({"role": item["role"], "content": item.get("content")})
    tools = body.get("tools")
    view: dict[str, Any] = {
        "model": body.get("model"),
        "messages": messages,
        "tools": [t for t in tools if isinstance(t, dict) and t.get("type") == "function"]
        if isinstance(tools, list)
        else [],
    }
    if isinstance(body.get("instructions"), str):
        view["system"] = body["instructions"]
    if isinstance(body.get("text"), dict):
        view["text"] = body["text"]
    return view


def build(body: dict[str, Any], b: Behavior | None, *, fixed_text: str | None, chunks: int) -> Answer:
    """The answer to a Responses request, cut at `max_output_tokens` as the real API cuts it."""
    a = build_answer(chat_view(body), b, fixed_text=fixed_text, chunks=chunks)
    if _wants_reasoning(body) and not (b is not None and b.usage):
        a.usage_extra.setdefault("reasoning_tokens", _REASONING_TOKENS)
        a.completion_tokens += a.usage_extra["reasoning_tokens"]
    limit = body.get("max_output_tokens")
    if isinstance(limit, int) and a.completion_tokens > limit and a.text:
        words = _WORD.findall(a.text)
        room = max(1, limit - a.usage_extra.get("reasoning_tokens", 0))
        if len(words) > room:
            a.text = "".join(words[:room])
        a.tool_calls = []  # a cut answer never carries a half-written call
        a.completion_tokens = limit
        a.finish_reason = "length"
    return a


def _wants_reasoning(body: dict[str, Any]) -> bool:
    reasoning = body.get("reasoning")
    return isinstance(reasoning, dict) and (
        reasoning.get("effort") not in (None, "none") or reasoning.get("summary") is not None
    )


def _usage(a: Answer) -> dict[str, Any]:
    return {
        "input_tokens": a.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": a.usage_extra.get("cached_tokens", 0),
            "cache_write_tokens": 0,
        },
        "output_tokens": a.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": a.usage_extra.get("reasoning_tokens", 0)},
        "total_tokens": a.prompt_tokens + a.completion_tokens,
    }


class _Shape:
    """One answer's output items with their ids fixed, so the JSON body and every event agree."""

    def __init__(self, a: Answer, body: dict[str, Any]) -> None:
        self.a = a
        self.body = body
        self.status = "incomplete" if a.finish_reason in _INCOMPLETE else "completed"
        self.reasoning: dict[str, Any] | None = None
        self.summary = ""
        if _wants_reasoning(body):
            reasoning = body["reasoning"]
            self.reasoning = {"id": _item_id("rs_"), "type": "reasoning", "summary": []}
            if reasoning.get("summary") is not None:
                self.summary = "**Answering** The user wants an answer; I will give it."
            include = body.get("include")
            if isinstance(include, list) and "reasoning.encrypted_content" in include:
                self.reasoning["encrypted_content"] = "gAAAAA" + uuid.uuid4().hex * 4
        self.message_id = _item_id("msg_") if a.text is not None else None
        self.call_ids = [_item_id("fc_") for _ in a.tool_calls]

    def reasoning_item(self, done: bool) -> dict[str, Any]:
        assert self.reasoning is not None
        summary = [{"type": "summary_text", "text": self.summary}] if done and self.summary else []
        return {**self.reasoning, "summary": summary}

    def message(self, done: bool) -> dict[str, Any]:
        part = {"type": "output_text", "annotations": [], "logprobs": [], "text": self.a.text or ""}
        return {
            "id": self.message_id,
            "type": "message",
            "status": (self.status if done else "in_progress"),
            "content": [part] if done else [],
            "role": "assistant",
        }

    def call(self, i: int, done: bool) -> dict[str, Any]:
        c = self.a.tool_calls[i]
        return {
            "id": self.call_ids[i],
            "type": "function_call",
            "status": "completed" if done else "in_progress",
            "arguments": c.arguments if done else "",
            "call_id": c.id,
            "name": c.name,
        }

    def items(self) -> list[dict[str, Any]]:
        out = [self.reasoning_item(True)] if self.reasoning is not None else []
        if self.message_id is not None:
            out.append(self.message(True))
        out.extend(self.call(i, True) for i in range(len(self.a.tool_calls)))
        return out

    def response(self, resp_id: str, created: int, final: bool) -> dict[str, Any]:
        """The `response` object: in progress (no output, no usage) or final."""
        body = self.body
        reasoning = body.get("reasoning") if isinstance(body.get("reasoning"), dict) else {}
        text = body.get("text") if isinstance(body.get("text"), dict) else {}
        tools = body.get("tools") if isinstance(body.get("tools"), list) else []
        incomplete = _INCOMPLETE.get(self.a.finish_reason) if final else None
        return {
            "id": resp_id,
            "object": "response",
            "created_at": created,
            "status": self.status if final else "in_progress",
            "background": bool(body.get("background") or False),
            "completed_at": (int(time.time()) if final and not incomplete else None),
            "error": None,
            "incomplete_details": {"reason": incomplete} if incomplete else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "max_tool_calls": body.get("max_tool_calls"),
            "model": self.a.model,
            "output": self.items() if final else [],
            "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
            "previous_response_id": body.get("previous_response_id"),
            "prompt_cache_key": body.get("prompt_cache_key"),
            "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
            "safety_identifier": body.get("safety_identifier"),
            "service_tier": "default",
            "store": body.get("store") is not False,
            "temperature": body.get("temperature") if body.get("temperature") is not None else 1.0,
            "text": {
                "format": text.get("format") or {"type": "text"},
                "verbosity": text.get("verbosity") or "medium",
            },
            "tool_choice": body.get("tool_choice") or "auto",
            "tools": [_echo_tool(t) for t in tools],
            "top_logprobs": body.get("top_logprobs") or 0,
            "top_p": body.get("top_p") if body.get("top_p") is not None else 1.0,
            "truncation": body.get("truncation") or "disabled",
            "usage": _usage(self.a) if final else None,
            "user": body.get("user"),
            "metadata": body.get("metadata") or {},
        }


def _echo_tool(tool: Any) -> Any:
    """A request's tool as the response lists it: function tools with the defaults filled in."""
    if isinstance(tool, dict) and tool.get("type") == "function":
        return {"description": None, "strict": True, "parameters": None, **tool}
    return tool


def response_body(a: Answer, body: dict[str, Any], resp_id: str) -> bytes:
    return orjson.dumps(_Shape(a, body).response(resp_id, int(time.time()), final=True))


def stream_events(a: Answer, body: dict[str, Any], resp_id: str) -> list[bytes]:
    """Every SSE event of the stream, in the real API's order, each with its `sequence_number`.

    Text deltas (and argument deltas) carry an `obfuscation` pad unless the request turned it off,
    as the real API does by default."""
    shape = _Shape(a, body)
    opts = body.get("stream_options")
    pad = not (isinstance(opts, dict) and opts.get("include_obfuscation") is False)
    created = int(time.time())
    out: list[bytes] = []

    def emit(kind: str, **fields: Any) -> None:
        data = {"type": kind, "sequence_number": len(out), **fields}
        out.append(b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n")

    def delta(kind: str, piece: str, **where: Any) -> None:
        extra = {"obfuscation": "x" * (16 - len(piece) % 16)} if pad else {}
        emit(kind, **where, delta=piece, **extra)

    emit("response.created", response=shape.response(resp_id, created, final=False))
    emit("response.in_progress", response=shape.response(resp_id, created, final=False))
    index = 0
    if shape.reasoning is not None:
        rid = shape.reasoning["id"]
        emit("response.output_item.added", output_index=index, item=shape.reasoning_item(False))
        if shape.summary:
            at = {"item_id": rid, "output_index": index, "summary_index": 0}
            emit("response.reasoning_summary_part.added", **at, part={"type": "summary_text", "text": ""})
            for piece in split_words(shape.summary, a.chunks):
                delta("response.reasoning_summary_text.delta", piece, **at)
            emit("response.reasoning_summary_text.done", **at, text=shape.summary)
            part = {"type": "summary_text", "text": shape.summary}
            emit("response.reasoning_summary_part.done", **at, part=part)
        emit("response.output_item.done", output_index=index, item=shape.reasoning_item(True))
        index += 1
    if shape.message_id is not None:
        at = {"item_id": shape.message_id, "output_index": index, "content_index": 0}
        emit("response.output_item.added", output_index=index, item=shape.message(False))
        empty = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
        emit("response.content_part.added", **at, part=empty)
        text = a.text or ""
        for piece in split_words(text, a.chunks):
            delta("response.output_text.delta", piece, **at, logprobs=[])
        emit("response.output_text.done", **at, text=text, logprobs=[])
        emit("response.content_part.done", **at, part={**empty, "text": text})
        emit("response.output_item.done", output_index=index, item=shape.message(True))
        index += 1
    for i, c in enumerate(a.tool_calls):
        at = {"item_id": shape.call_ids[i], "output_index": index}
        emit("response.output_item.added", output_index=index, item=shape.call(i, False))
        for piece in split_pieces(c.arguments, max(2, a.chunks)):
            delta("response.function_call_arguments.delta", piece, **at)
        emit("response.function_call_arguments.done", **at, arguments=c.arguments)
        emit("response.output_item.done", output_index=index, item=shape.call(i, True))
        index += 1
    final = shape.response(resp_id, created, final=True)
    emit("response.completed" if shape.status == "completed" else "response.incomplete", response=final)
    return out


def error_event(err: dict[str, Any]) -> bytes:
    """A mid-stream failure as the Responses API streams it: an `error` event (`after` = its number)."""
    data = {
        "type": "error",
        "sequence_number": int(err.get("after", 0)),
        "code": err.get("code", "server_error"),
        "message": err.get("message", "The server had an error while processing your request."),
        "param": None,
    }
    return b"event: error\ndata: " + orjson.dumps(data) + b"\n\n"
