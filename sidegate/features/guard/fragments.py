"""The text a request carries, as writable slots, for every inbound API shape.

A slot is a (container, key) pair whose value is a string, plus the normalised role of its message.
Images, audio, files, thinking blocks (signed by the provider: editing them breaks the signature) and
tool definitions are not text the guard looks at.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sidegate.config.guard import Role
from sidegate.errors import Api

_OPENAI_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
    "function": "tool",
}

_MAX_DEPTH = 32


@dataclass(slots=True)
class Slot:
    container: dict[str, Any] | list[Any]
    key: Any
    role: Role
    json_text: bool = False
    """The string is itself JSON (OpenAI tool-call ``arguments``)."""

    @property
    def text(self) -> str:
        return self.container[self.key]  # type: ignore[index, no-any-return]

    def set(self, value: str) -> None:
        self.container[self.key] = value  # type: ignore[index]


def _strings(obj: Any, role: Role, depth: int = 0) -> Iterator[Slot]:
    """Every string inside a JSON-like value (tool inputs)."""
    if depth > _MAX_DEPTH:
        return
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        if isinstance(v, str):
            yield Slot(obj, k, role)
        elif isinstance(v, dict | list):
            yield from _strings(v, role, depth + 1)


def _openai(body: dict[str, Any]) -> Iterator[Slot]:
    msgs = body.get("messages")
    if not isinstance(msgs, list):
        return
    for msg in msgs:
        if not isinstance(msg, dict):
            continue
        role = _OPENAI_ROLES.get(msg.get("role", ""), "user")
        content = msg.get("content")
        if isinstance(content, str):
            yield Slot(msg, "content", role)
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, dict):
                    continue
                ptype = part.get("type")
                if ptype == "text" and isinstance(part.get("text"), str):
                    yield Slot(part, "text", role)
                elif ptype == "refusal" and isinstance(part.get("refusal"), str):
                    yield Slot(part, "refusal", role)
        calls = msg.get("tool_calls")
        if isinstance(calls, list):
            for call in calls:
                fn = call.get("function") if isinstance(call, dict) else None
                if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                    yield Slot(fn, "arguments", role, json_text=True)
        fn = msg.get("function_call")  # legacy
        if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
            yield Slot(fn, "arguments", role, json_text=True)


def _anthropic_blocks(blocks: list[Any], role: Role, depth: int = 0) -> Iterator[Slot]:
    for block in blocks:
        if not isinstance(block, dict):
            continue
        btype = block.get("type")
        if btype == "text" and isinstance(block.get("text"), str):
            yield Slot(block, "text", role)
        elif btype == "tool_result" and depth == 0:
            content = block.get("content")
            if isinstance(content, str):
                yield Slot(block, "content", "tool")
            elif isinstance(content, list):
                yield from _anthropic_blocks(content, "tool", depth + 1)
        elif btype == "tool_use" and isinstance(block.get("input"), dict | list):
            yield from _strings(block["input"], role)
        elif btype == "document":
            src = block.get("source")
            if isinstance(src, dict) and src.get("type") == "text" and isinstance(src.get("data"), str):
                yield Slot(src, "data", role)
            elif (
                isinstance(src, dict)
                and src.get("type") == "content"
                and isinstance(src.get("content"), list)
            ):
                yield from _anthropic_blocks(src["content"], role, depth + 1)


def _anthropic(body: dict[str, Any]) -> Iterator[Slot]:
    system = body.get("system")
    if isinstance(system, str):
        yield Slot(body, "system", "system")
    elif isinstance(system, list):
        yield from _anthropic_blocks(system, "system")
    msgs = body.get("messages")
    if not isinstance(msgs, list):
        return
    for msg in msgs:
        if not isinstance(msg, dict):
            continue
        role: Role = "assistant" if msg.get("role") == "assistant" else "user"
        content = msg.get("content")
        if isinstance(content, str):
            yield Slot(msg, "content", role)
        elif isinstance(content, list):
            yield from _anthropic_blocks(content, role)


_RESPONSES_TEXT_PARTS = ("input_text", "output_text", "text")
"""Responses content parts that carry text (`text` is the chat-style spelling some clients send)."""


def _responses_parts(content: Any, role: Role) -> Iterator[Slot]:
    """A Responses message's or tool output's content: a string, or parts (input/output text and
    refusals; images and files are not text the guard reads)."""
    if not isinstance(content, list):
        return
    for part in content:
        if not isinstance(part, dict):
            continue
        ptype = part.get("type")
        if ptype in _RESPONSES_TEXT_PARTS and isinstance(part.get("text"), str):
            yield Slot(part, "text", role)
        elif ptype == "refusal" and isinstance(part.get("refusal"), str):
            yield Slot(part, "refusal", role)
        else:  # a shell call's output: what the command printed
            for key in ("stdout", "stderr"):
                if isinstance(part.get(key), str):
                    yield Slot(part, key, role)


def _responses(body: dict[str, Any]) -> Iterator[Slot]:
    """OpenAI's Responses API: `instructions` (the system prompt), `input` as a string (one user
    message) or as items: messages, function calls (their JSON `arguments`) and function call
    outputs. Reasoning items are the provider's own (encrypted or signed) and are left alone, as
    Anthropic thinking blocks are; a built-in tool's output is read as a function's is (a
    Responses provider takes those items as they are)."""
    if isinstance(body.get("instructions"), str):
        yield Slot(body, "instructions", "system")
    prompt = body.get("prompt")  # a stored prompt's variables: the client's text, filled in by OpenAI
    variables = prompt.get("variables") if isinstance(prompt, dict) else None
    if isinstance(variables, dict):
        for name, value in variables.items():
            if isinstance(value, str):
                yield Slot(variables, name, "user")
            elif isinstance(value, dict) and value.get("type") == "input_text" and isinstance(value.get("text"), str):
                yield Slot(value, "text", "user")
    items = body.get("input")
    if isinstance(items, str):
        yield Slot(body, "input", "user")
        return
    if not isinstance(items, list):
        return
    for item in items:
        if not isinstance(item, dict):
            continue
        itype = item.get("type", "message")
        if itype == "message":
            role = _OPENAI_ROLES.get(item.get("role", ""), "user")
            if isinstance(item.get("content"), str):
                yield Slot(item, "content", role)
            else:
                yield from _responses_parts(item.get("content"), role)
        elif itype == "function_call" and isinstance(item.get("arguments"), str):
            yield Slot(item, "arguments", "assistant", json_text=True)
        elif itype == "custom_tool_call" and isinstance(item.get("input"), str):
            yield Slot(item, "input", "assistant")
        elif isinstance(item.get("output"), str):
            # function and custom tool outputs, and the built-in tools' a Responses provider takes
            # as they are (local_shell_call_output, apply_patch_call_output, mcp_call...): what a
            # tool returned is the client's data, whatever tool it was
            yield Slot(item, "output", "tool")
        else:
            yield from _responses_parts(item.get("output"), "tool")


_GEMINI_ROLES: dict[str, Role] = {"user": "user", "model": "assistant", "function": "tool", "tool": "tool"}


def _gemini_parts(parts: Any, role: Role) -> Iterator[Slot]:
    """A Gemini Content's parts: text, a function call's `args` and a function response's
    `response` (JSON objects); thought parts are the provider's (signed) and left alone, inline
    and file data are not text."""
    for part in parts if isinstance(parts, list) else ():
        if not isinstance(part, dict) or part.get("thought"):
            continue
        if isinstance(part.get("text"), str):
            yield Slot(part, "text", role)
            continue
        call = part.get("functionCall", part.get("function_call"))
        if isinstance(call, dict) and isinstance(call.get("args"), dict | list):
            yield from _strings(call["args"], role)
        answer = part.get("functionResponse", part.get("function_response"))
        if isinstance(answer, dict) and isinstance(answer.get("response"), dict | list):
            yield from _strings(answer["response"], "tool")


def _gemini(body: dict[str, Any]) -> Iterator[Slot]:
    """Google's Gemini API: the system instruction and each content's parts (a countTokens request
    may wrap the whole generateContent request in `generateContentRequest`)."""
    inner = body.get("generateContentRequest")
    if isinstance(inner, dict):
        body = inner
    system = body.get("systemInstruction", body.get("system_instruction"))
    if isinstance(system, dict):
        yield from _gemini_parts(system.get("parts"), "system")
    contents = body.get("contents")
    for content in contents if isinstance(contents, list) else ():
        if isinstance(content, dict):
            yield from _gemini_parts(content.get("parts"), _GEMINI_ROLES.get(content.get("role") or "user", "user"))


def slots(api: Api, body: dict[str, Any]) -> list[Slot]:
    """Every text slot of a parsed request body of `api`, in document order."""
    if api is Api.ANTHROPIC:
        return list(_anthropic(body))
    if api is Api.RESPONSES:
        return list(_responses(body))
    if api is Api.GEMINI:
        return list(_gemini(body))
    return list(_openai(body))
