"""Deterministic answer text, cheap token counts and stream splitting for the fake providers."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["approx_tokens", "example_args", "last_user_text", "prompt_text", "split_pieces", "split_words"]

_WORD = re.compile(r"\s*\S+")


def _content_text(content: Any) -> str:
    """Text of an OpenAI or Anthropic message `content` (a string or a list of typed parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if isinstance(part, dict):
                text = part.get("text")
                if isinstance(text, str):
                    parts.append(text)
                elif part.get("type") == "tool_result":
                    parts.append(_content_text(part.get("content")))
        return " ".join(p for p in parts if p)
    return ""


def last_user_text(body: dict[str, Any]) -> str:
    """Text of the last `user` (or chat `tool`) message of a chat/messages request ('' when none).

    A tool's result is what the next answer is about: after a tool round trip every API's fake
    echoes it (a chat `tool` message, an Anthropic `tool_result` block, a Responses
    `function_call_output`), so the answer is the same whichever provider serves the turn."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return ""
    for msg in reversed(messages):
        if isinstance(msg, dict) and msg.get("role") in ("user", "tool"):
            return _content_text(msg.get("content"))
    return ""


def prompt_text(body: dict[str, Any]) -> str:
    """All the text a request sends as prompt: `system` plus every message's text."""
    parts: list[str] = []
    system = body.get("system")
    if system is not None:
        parts.append(_content_text(system))
    messages = body.get("messages")
    if isinstance(messages, list):
        for msg in messages:
            if isinstance(msg, dict):
                parts.append(_content_text(msg.get("content")))
    return " ".join(p for p in parts if p)


def approx_tokens(text: str) -> int:
    """The fakes' token count: whitespace-separated words, at least 1."""
    return max(1, len(text.split()))


def split_pieces(text: str, n: int) -> list[str]:
    """Split `text` into at most `n` consecutive non-empty pieces of about equal length ('' -> [])."""
    if not text:
        return []
    n = max(1, min(n, len(text)))
    size, extra = divmod(len(text), n)
    out: list[str] = []
    pos = 0
    for i in range(n):
        end = pos + size + (1 if i < extra else 0)
        out.append(text[pos:end])
        pos = end
    return out


def split_words(text: str, n: int) -> list[str]:
    """Split `text` into at most `n` pieces at word starts (like tokens: " word"); joined, they give `text`."""
    words = _WORD.findall(text)
    if len(words) <= 1:
        return split_pieces(text, min(n, 1)) if text else []
    tail = text[sum(len(w) for w in words) :]
    words[-1] += tail
    n = max(1, min(n, len(words)))
    size, extra = divmod(len(words), n)
    out: list[str] = []
    pos = 0
    for i in range(n):
        end = pos + size + (1 if i < extra else 0)
        out.append("".join(words[pos:end]))
        pos = end
    return out


def example_args(schema: Any) -> dict[str, Any]:
    """Arguments for a tool call that fit a JSON schema's top-level properties (deterministic)."""
    out: dict[str, Any] = {}
    props = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(props, dict):
        return out
    for name, prop in props.items():
        kind = prop.get("type") if isinstance(prop, dict) else None
        if isinstance(prop, dict) and isinstance(prop.get("enum"), list) and prop["enum"]:
            out[name] = prop["enum"][0]
        elif kind == "integer" or kind == "number":
            out[name] = 1
        elif kind == "boolean":
            out[name] = True
        elif kind == "array":
            out[name] = []
        elif kind == "object":
            out[name] = {}
        else:
            out[name] = f"{name}-value"
    return out
