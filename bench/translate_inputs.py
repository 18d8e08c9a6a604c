"""Bench inputs for bench/translate_design.py: client requests, provider answers and provider streams.

Each request exists in both client APIs with the same conversation, so every pair is measured on the
same content: "small" is one turn, "large" is 50 turns with tool calls, tool results, images, five
tools, a tool choice, stop sequences and sampling knobs (what an agent loop sends).
"""

from __future__ import annotations

import base64
import json
from typing import Any

TEXT = "The quick brown fox jumps over the lazy dog, "
_PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG fake image bytes " * 40).decode()
_SCHEMA = {
    "type": "object",
    "properties": {"query": {"type": "string"}, "limit": {"type": "integer", "minimum": 1}},
    "required": ["query"],
}
_TOOLS = [f"tool_{i}" for i in range(5)]


def openai_request(turns: int) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": "You are a careful agent."}]
    for i in range(turns - 1):
        content: Any = f"Step {i}: " + TEXT * 4
        if i % 10 == 3:
            content = [{"type": "text", "text": content}, {"type": "image_url", "image_url": {"url": _PNG}}]
        messages.append({"role": "user", "content": content})
        call = {
            "id": f"call_{i}",
            "type": "function",
            "function": {"name": _TOOLS[i % 5], "arguments": json.dumps({"query": f"q{i}", "limit": i + 1})},
        }
        messages.append({"role": "assistant", "content": "Let me look. " + TEXT, "tool_calls": [call]})
        messages.append({"role": "tool", "tool_call_id": f"call_{i}", "content": "result " + TEXT * 3})
    messages.append({"role": "user", "content": "And now? " + TEXT})
    body: dict[str, Any] = {"model": "gpt-4o", "messages": messages, "max_completion_tokens": 1024}
    if turns > 1:
        body |= {
            "temperature": 0.3,
            "top_p": 0.9,
            "stop": ["\n\nHuman:", "END"],
            "tools": [
                {
                    "type": "function",
                    "function": {"name": n, "description": f"Tool {n}.", "parameters": _SCHEMA},
                }
                for n in _TOOLS
            ],
            "tool_choice": "auto",
            "parallel_tool_calls": False,
            "user": "user-42",
            "stream": True,
        }
    return body


def anthropic_request(turns: int) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    result: list[dict[str, Any]] = []
    for i in range(turns - 1):
        text = {"type": "text", "text": f"Step {i}: " + TEXT * 4}
        blocks: list[dict[str, Any]] = [*result, text]
        if i % 10 == 3:
            data = _PNG.partition(",")[2]
            blocks.append(
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}}
            )
        messages.append({"role": "user", "content": blocks})
        use = {
            "type": "tool_use",
            "id": f"toolu_{i}",
            "name": _TOOLS[i % 5],
            "input": {"query": f"q{i}", "limit": i + 1},
        }
        messages.append(
            {"role": "assistant", "content": [{"type": "text", "text": "Let me look. " + TEXT}, use]}
        )
        result = [{"type": "tool_result", "tool_use_id": f"toolu_{i}", "content": "result " + TEXT * 3}]
    messages.append({"role": "user", "content": [*result, {"type": "text", "text": "And now? " + TEXT}]})
    if turns == 1:
        messages = [{"role": "user", "content": "And now? " + TEXT}]
    body: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "system": "You are a careful agent.",
        "messages": messages,
    }
    if turns > 1:
        body |= {
            "system": [
                {"type": "text", "text": "You are a careful agent.", "cache_control": {"type": "ephemeral"}}
            ],
            "temperature": 0.3,
            "top_p": 0.9,
            "stop_sequences": ["\n\nHuman:", "END"],
            "tools": [{"name": n, "description": f"Tool {n}.", "input_schema": _SCHEMA} for n in _TOOLS],
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
            "thinking": {"type": "enabled", "budget_tokens": 2048},
            "metadata": {"user_id": "user-42"},
            "stream": True,
        }
    return body


def anthropic_response(large: bool) -> bytes:
    content: list[dict[str, Any]] = [{"type": "text", "text": TEXT * 3}]
    if large:
        content = [
            {"type": "thinking", "thinking": TEXT * 20, "signature": "sig" * 30},
            {"type": "text", "text": TEXT * 40},
        ]
        content += [
            {"type": "tool_use", "id": f"toolu_{i}", "name": _TOOLS[i], "input": {"query": TEXT, "limit": i}}
            for i in range(5)
        ]
    return json.dumps(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5",
            "content": content,
            "stop_reason": "tool_use" if large else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 900, "output_tokens": 300, "cache_read_input_tokens": 100},
        }
    ).encode()


def openai_response(large: bool) -> bytes:
    message: dict[str, Any] = {"role": "assistant", "content": TEXT * 3, "refusal": None}
    if large:
        message["content"] = TEXT * 40
        message["reasoning_content"] = TEXT * 20
        message["tool_calls"] = [
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {"name": _TOOLS[i], "arguments": json.dumps({"query": TEXT, "limit": i})},
            }
            for i in range(5)
        ]
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "gpt-4o",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "tool_calls" if large else "stop",
                }
            ],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 300, "total_tokens": 1300},
        }
    ).encode()


def _sse(name: str | None, obj: dict[str, Any]) -> bytes:
    data = json.dumps(obj, separators=(",", ":")).encode()
    return (f"event: {name}\n".encode() if name else b"") + b"data: " + data + b"\n\n"


def anthropic_stream(tools: bool, deltas: int = 200) -> list[bytes]:
    """One provider event per chunk (how providers flush); text only, or thinking + text + 3 tool calls."""
    msg = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5", "content": []}
    msg |= {"stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 100, "output_tokens": 1}}
    out = [_sse("message_start", {"type": "message_start", "message": msg})]
    index = 0

    def block(start: dict[str, Any], delta_list: list[dict[str, Any]]) -> None:
        nonlocal index
        out.append(
            _sse(
                "content_block_start", {"type": "content_block_start", "index": index, "content_block": start}
            )
        )
        for d in delta_list:
            out.append(
                _sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
            )
        out.append(_sse("content_block_stop", {"type": "content_block_stop", "index": index}))
        index += 1

    n_text = deltas if not tools else deltas // 4
    if tools:
        block(
            {"type": "thinking", "thinking": "", "signature": ""},
            [{"type": "thinking_delta", "thinking": TEXT}] * n_text,
        )
    block({"type": "text", "text": ""}, [{"type": "text_delta", "text": TEXT}] * n_text)
    if tools:
        for i in range(3):
            start = {"type": "tool_use", "id": f"toolu_{i}", "name": _TOOLS[i], "input": {}}
            block(
                start,
                [
                    {"type": "input_json_delta", "partial_json": '{"query": "fox ' if j == 0 else "jumps "}
                    for j in range(deltas // 6)
                ],
            )
    delta = {"stop_reason": "tool_use" if tools else "end_turn", "stop_sequence": None}
    out.append(
        _sse("message_delta", {"type": "message_delta", "delta": delta, "usage": {"output_tokens": 2000}})
    )
    out.append(_sse("message_stop", {"type": "message_stop"}))
    return out


def openai_stream(tools: bool, deltas: int = 200) -> list[bytes]:
    head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000, "model": "gpt-4o"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _sse(None, {**head, "choices": [choice], "usage": None})

    out = [chunk({"role": "assistant", "content": ""})]
    n_text = deltas if not tools else deltas // 4
    if tools:
        out += [chunk({"reasoning_content": TEXT})] * n_text
    out += [chunk({"content": TEXT})] * n_text
    if tools:
        for i in range(3):
            fn = {"name": _TOOLS[i], "arguments": ""}
            out.append(
                chunk({"tool_calls": [{"index": i, "id": f"call_{i}", "type": "function", "function": fn}]})
            )
            arg = {"tool_calls": [{"index": i, "function": {"arguments": "jumps "}}]}
            out += [chunk(arg)] * (deltas // 6)
    out.append(chunk({}, "tool_calls" if tools else "stop"))
    usage = {"prompt_tokens": 100, "completion_tokens": 2000, "total_tokens": 2100}
    out.append(_sse(None, {**head, "choices": [], "usage": usage}))
    out.append(b"data: [DONE]\n\n")
    return out


ERRORS = [
    (429, b'{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}'),
    (529, b'{"type":"error","error":{"type":"overloaded_error","message":"busy"}}'),
    (400, b'{"error":{"message":"bad","type":"invalid_request_error","param":null,"code":null}}'),
    (500, b"<html>oops</html>"),
]
