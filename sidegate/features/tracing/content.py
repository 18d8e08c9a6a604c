"""Prompt and completion content for the spans of the tenants that opted in (`content_tenants`), in
the GenAI semantic conventions' message shapes (`gen_ai.input.messages`, `gen_ai.output.messages`,
`gen_ai.system_instructions`), read with the client API's own codec (sidegate/translate/codecs).

Only for those tenants' sampled tries: a try hook keeps the client's body as the provider is sent it
(after the guard's redaction) and the answer as the client gets it, bounded; the spans never hold a
key or a header. Base64 images and documents are named, not copied.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from sidegate.errors import Api
from sidegate.translate.codecs import form
from sidegate.translate.codecs.translator import REQUESTS, RESPONSES

log = logging.getLogger("sidegate.tracing")

MAX_ANSWER_BYTES = 1 << 20
"""Largest answer kept for a span (a longer one's output is not recorded)."""
MAX_PART_CHARS = 16 * 1024
"""A longer text part is cut (the semconv lets instrumentations truncate)."""
FINISH = {
    "end": "stop",
    "stop_sequence": "stop",
    "length": "length",
    "tool_use": "tool_call",
    "refusal": "content_filter",
}
"""The form's stop reasons -> the semconv's finish reasons."""


def _text(s: str) -> str:
    return s if len(s) <= MAX_PART_CHARS else s[:MAX_PART_CHARS] + "…"


def _part(p: Any) -> dict[str, Any]:
    if isinstance(p, form.Text):
        return {"type": "text", "content": _text(p.text)}
    if isinstance(p, form.Thinking):
        return {"type": "reasoning", "content": _text(p.text)}
    if isinstance(p, form.ToolCall):
        return {"type": "tool_call", "id": p.id, "name": p.name, "arguments": p.input}
    if isinstance(p, form.ToolResult):
        return {"type": "tool_call_response", "id": p.call_id, "response": _text(p.text)}
    if isinstance(p, form.Image):
        return (
            {"type": "uri", "modality": "image", "uri": p.url}
            if p.url
            else {"type": "blob", "modality": "image", "mime_type": p.media_type}
        )
    if isinstance(p, form.Document):
        return {"type": "blob", "modality": "document", "mime_type": p.media_type or "text/plain"}
    return {"type": type(p).__name__.lower()}


def _parts(content: str | list[Any]) -> list[dict[str, Any]]:
    return (
        [{"type": "text", "content": _text(content)}]
        if isinstance(content, str)
        else [_part(p) for p in content]
    )


def input_messages(api: Api, body: dict[str, Any]) -> dict[str, str]:
    """The request's messages and system instructions as span attributes (JSON strings: a span
    event's attributes cannot nest); empty if the body cannot be read."""
    try:
        req = REQUESTS[api].decode_request(body)
    except Exception:  # a body the provider will refuse: its content is not worth a span
        return {}
    system = [p for m in req.messages if m.role == "system" for p in _parts(m.content)]
    messages = [{"role": m.role, "parts": _parts(m.content)} for m in req.messages if m.role != "system"]
    out = {"gen_ai.input.messages": orjson.dumps(messages).decode()}
    if system:
        out["gen_ai.system_instructions"] = orjson.dumps(system).decode()
    return out


class Answer:
    """What a try's answer said: its output message, finish reason and model (when read)."""

    __slots__ = ("finish", "messages", "model")

    def __init__(self, messages: list[dict[str, Any]], finish: str | None, model: str):
        self.messages = messages
        self.finish = finish
        self.model = model


def _answer(parts: list[Any], stop: str | None, model: str) -> Answer:
    finish = FINISH.get(stop or "", stop) if stop else None
    message: dict[str, Any] = {"role": "assistant", "parts": [_part(p) for p in parts]}
    if finish:
        message["finish_reason"] = finish
    return Answer([message], finish, model)


def read_answer(api: Api, answer: bytes, streamed: bool) -> Answer | None:
    """A client-format answer (JSON, or the whole SSE stream) -> Answer; None if unreadable."""
    try:
        if not streamed:
            resp = RESPONSES[api].decode_response(orjson.loads(answer))
            return _answer(resp.content, resp.stop, resp.model)
        decoder = RESPONSES[api].StreamDecoder()
        events = [*decoder.feed(answer), *decoder.finish()]
    except Exception:
        return None
    return _from_events(events)


def _from_events(events: list[Any]) -> Answer:
    text: list[str] = []
    thinking: list[str] = []
    tools: dict[int, list[str]] = {}
    calls: dict[int, tuple[str, str]] = {}
    stop, model = None, ""
    for ev in events:
        if isinstance(ev, form.TextDelta):
            text.append(ev.text)
        elif isinstance(ev, form.ThinkingDelta):
            thinking.append(ev.text)
        elif isinstance(ev, form.ToolStart):
            calls[ev.index] = (ev.id, ev.name)
            tools[ev.index] = [ev.arguments]
        elif isinstance(ev, form.ToolDelta):
            tools.setdefault(ev.index, []).append(ev.arguments)
        elif isinstance(ev, form.Stop):
            stop = ev.reason
        elif isinstance(ev, form.Start):
            model = ev.model or model
    parts: list[Any] = []
    if thinking:
        parts.append(form.Thinking("".join(thinking)))
    if text:
        parts.append(form.Text("".join(text)))
    for index, (call_id, name) in calls.items():
        raw = "".join(tools.get(index, ()))
        try:
            args = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            args = {"raw": raw}
        parts.append(form.ToolCall(call_id, name, args if isinstance(args, dict) else {"value": args}))
    return _answer(parts, stop, model)


class ContentHook:
    """A content tenant's try hook: keeps the client's body (as messages) and the client's answer."""

    __slots__ = ("answer", "api", "inputs", "whole")

    def __init__(self, api: Api):
        self.api = api
        self.inputs: dict[str, str] = {}
        self.answer = bytearray()
        self.whole = True

    def request(self, body: dict[str, Any]) -> None:
        self.inputs = input_messages(self.api, body)

    def _keep(self, out: bytes) -> None:
        if self.whole and len(self.answer) + len(out) <= MAX_ANSWER_BYTES:
            self.answer += out
        else:
            self.whole = False
            self.answer.clear()

    def response(self, body: bytes) -> bytes:
        self._keep(body)
        return body

    def stream(self, chunk: bytes, end: bool) -> bytes:
        self._keep(chunk)
        return chunk

    def attributes(self, streamed: bool, ok: bool) -> tuple[dict[str, str], Answer | None]:
        """The content event's attributes, and the answer read (None: not read or not whole)."""
        attrs = dict(self.inputs)
        answer = (
            read_answer(self.api, bytes(self.answer), streamed) if ok and self.whole and self.answer else None
        )
        if answer is not None:
            attrs["gen_ai.output.messages"] = orjson.dumps(answer.messages).decode()
        return attrs, answer
