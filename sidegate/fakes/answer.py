"""What the fake answers: text or tool calls and usage, derived from the request and a behaviour."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from sidegate.fakes.behavior import Behavior
from sidegate.fakes.structured import structured_text
from sidegate.fakes.text import approx_tokens, example_args, last_user_text, prompt_text

__all__ = ["Answer", "ToolCall", "build_answer"]

# finish reasons in OpenAI spelling; Anthropic stop reasons are mapped onto them.
_FROM_ANTHROPIC = {
    "end_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "stop_sequence": "stop",
    "pause_turn": "stop",
}


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str  # the JSON text


@dataclass
class Answer:
    model: str
    text: str | None
    tool_calls: list[ToolCall]
    finish_reason: str  # OpenAI spelling
    prompt_tokens: int
    completion_tokens: int
    usage_extra: dict[str, int] = field(default_factory=dict)
    chunks: int = 4
    raw_finish: str | None = None  # as given by the behaviour (either spelling)


def _tool_calls(spec: Any, body: dict[str, Any]) -> list[ToolCall]:
    if spec == "auto":  # call every tool the request declares, with arguments fitting its schema
        spec = []
        for tool in body.get("tools") or []:
            if not isinstance(tool, dict):
                continue
            fn = tool.get("function") if isinstance(tool.get("function"), dict) else tool
            schema = fn.get("parameters", fn.get("input_schema"))
            spec.append({"name": fn.get("name", "tool"), "arguments": example_args(schema)})
    out: list[ToolCall] = []
    for item in spec or []:
        args = item.get("arguments", item.get("input", {}))
        text = args if isinstance(args, str) else orjson.dumps(args).decode()
        out.append(
            ToolCall(item.get("id") or "call_" + uuid.uuid4().hex[:24], str(item.get("name", "tool")), text)
        )
    return out


def build_answer(body: dict[str, Any], b: Behavior | None, *, fixed_text: str | None, chunks: int) -> Answer:
    """The answer for a chat/messages request (or a Responses request seen as chat): `Echo: <last user text>` unless scripted or fixed."""
    model = (b.response_model if b and b.response_model else None) or str(body.get("model") or "unknown")
    calls = _tool_calls(b.tool_calls, body) if b and b.tool_calls else []
    if b is not None and b.content is not None:
        text: str | None = b.content
    elif calls:
        text = None
    else:
        text = fixed_text if fixed_text is not None else "Echo: " + last_user_text(body)
        # Structured output wins over `fixed_text`: the client parses the answer as JSON.
        text = structured_text(body, text) or text
    n = b.chunks if b and b.chunks else chunks
    completion = (approx_tokens(text) if text else 0) + sum(len(c.arguments.split()) + 1 for c in calls)
    raw_finish = b.finish_reason if b else None
    finish = _FROM_ANTHROPIC.get(raw_finish or "", raw_finish) or ("tool_calls" if calls else "stop")
    a = Answer(
        model,
        text,
        calls,
        finish,
        approx_tokens(prompt_text(body)),
        max(1, completion),
        chunks=max(1, n),
        raw_finish=raw_finish,
    )
    if b and b.usage:
        u = dict(b.usage)
        a.prompt_tokens = int(u.pop("prompt_tokens", u.pop("input_tokens", a.prompt_tokens)))
        a.completion_tokens = int(u.pop("completion_tokens", u.pop("output_tokens", a.completion_tokens)))
        a.usage_extra = {k: int(v) for k, v in u.items()}
    return a
