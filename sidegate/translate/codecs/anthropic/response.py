"""Anthropic Messages answers <-> the canonical form: bodies and SSE streams."""

from __future__ import annotations

from typing import Any

from sidegate.errors import Api
from sidegate.sse import encode_event
from sidegate.translate.base import Usage
from sidegate.translate.codecs.form import (
    END,
    Document,
    End,
    Event,
    Failure,
    Image,
    Part,
    Response,
    Start,
    Stop,
    Text,
    TextDelta,
    Thinking,
    ThinkingDelta,
    ToolCall,
    ToolDelta,
    ToolResult,
    ToolStart,
    UsageUpdate,
)
from sidegate.translate.codecs.util import JsonEventDecoder, stream_error
from sidegate.translate.common import (
    STREAM_TRUNCATED,
    as_count,
    as_dict,
    as_list,
    as_str,
    dumps,
    is_int,
)
from sidegate.translate.usage import (
    ANTHROPIC_USAGE_KEYS,
    anthropic_usage,
    parse_anthropic_usage,
    thinking_tokens,
)

_STOP_IN = {
    "end_turn": "end",
    "stop_sequence": "stop_sequence",
    "pause_turn": "pause",
    "max_tokens": "length",
}
_STOP_IN.update(model_context_window_exceeded="length", tool_use="tool_use", refusal="refusal")
_STOP_OUT = {
    "end": "end_turn",
    "stop_sequence": "stop_sequence",
    "pause": "pause_turn",
    "length": "max_tokens",
}
_STOP_OUT.update(tool_use="tool_use", refusal="refusal")
_ANTHROPIC_KINDS = {"rate_limit_error": "rate_limit", "invalid_request_error": "invalid_request"}

# ------------------------------------------------------------------------------------ responses


def content_block(part: Part) -> dict[str, Any]:
    """One part as an Anthropic content block (requests and responses share the shapes)."""
    if type(part) is Text:
        return {"type": "text", "text": part.text}
    if type(part) is ToolCall:
        return {"type": "tool_use", "id": part.id, "name": part.name, "input": part.input}
    if type(part) is ToolResult:
        out: dict[str, Any] = {"type": "tool_result", "tool_use_id": part.call_id, "content": part.text}
        if part.is_error:
            out["is_error"] = True
        return out
    if type(part) is Image:
        if part.url:
            return {"type": "image", "source": {"type": "url", "url": part.url}}
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": part.media_type, "data": part.data},
        }
    if type(part) is Document:
        if part.text is not None:
            return {
                "type": "document",
                "source": {"type": "text", "media_type": "text/plain", "data": part.text},
            }
        doc: dict[str, Any] = {
            "type": "document",
            "source": {"type": "base64", "media_type": part.media_type},
        }
        doc["source"]["data"] = part.data
        if part.title:
            doc["title"] = part.title
        return doc
    assert type(part) is Thinking
    return {"type": "thinking", "thinking": part.text, "signature": part.signature}


def decode_response(msg: dict[str, Any]) -> Response:
    """A Messages answer -> the form. Provider answers are read leniently (a wrong type counts as
    absent): one quirky field must not cost the client its answer."""
    content: list[Part] = []
    for block in as_list(msg.get("content")):
        block = as_dict(block)
        kind = block.get("type")
        if kind == "text":
            content.append(Text(as_str(block.get("text"))))
        elif kind == "thinking":
            content.append(Thinking(as_str(block.get("thinking")), as_str(block.get("signature"))))
        elif kind == "tool_use":
            content.append(
                ToolCall(as_str(block.get("id")), as_str(block.get("name")), block.get("input") or {})
            )
        # redacted_thinking and server-tool blocks: the form has no place for them
    raw = as_dict(msg.get("usage"))
    reason = msg.get("stop_reason")
    stop = _STOP_IN.get(reason, "end") if isinstance(reason, str) else "end"
    seq = msg.get("stop_sequence") if isinstance(msg.get("stop_sequence"), str) else None
    return Response(
        as_str(msg.get("id")),
        as_str(msg.get("model")),
        content,
        stop,
        seq,
        parse_anthropic_usage(raw),
        thinking_tokens(raw),
    )


def encode_response(resp: Response, created: int) -> dict[str, Any]:
    """The form -> a Messages answer for an Anthropic client (``created``: OpenAI's only, unused)."""
    return {
        "id": resp.id,
        "type": "message",
        "role": "assistant",
        "model": resp.model,
        "content": [content_block(p) for p in resp.content],
        "stop_reason": _STOP_OUT[resp.stop],
        "stop_sequence": resp.stop_sequence,
        "usage": anthropic_usage(resp.usage),
    }


# ------------------------------------------------------------------------------------- streams


class AnthropicStreamDecoder(JsonEventDecoder):
    """Messages SSE -> form events. Tool calls are renumbered by call (not by content block), the
    form's index; usage counters are cumulative, so each update carries the full usage so far."""

    __slots__ = ("_blocks", "_ntools", "_raw", "_thinking")

    def __init__(self) -> None:
        super().__init__()
        self._raw: dict[str, int] = {}
        self._blocks: dict[int, int] = {}  # content block index -> tool call index
        self._ntools = 0
        self._thinking: int | None = None

    def _usage(self, u: dict[str, Any]) -> UsageUpdate:
        raw = self._raw
        for key in ANTHROPIC_USAGE_KEYS:
            value = u.get(key)
            if value is not None:
                raw[key] = as_count(value)
        self.usage = parse_anthropic_usage(raw)
        return UsageUpdate(self.usage, self._thinking)

    def _event(self, data: dict[str, Any], out: list[Event]) -> None:
        kind = data.get("type")
        if kind == "content_block_delta":
            delta = as_dict(data.get("delta"))
            dkind = delta.get("type")
            if dkind == "text_delta":
                out.append(TextDelta(as_str(delta.get("text"))))
            elif dkind == "input_json_delta":
                part = as_str(delta.get("partial_json"))
                index = data.get("index", -1)
                idx = self._blocks.get(index) if is_int(index) else None
                if part and idx is not None:
                    out.append(ToolDelta(idx, part))
            elif dkind == "thinking_delta":
                out.append(ThinkingDelta(as_str(delta.get("thinking"))))
        elif kind == "content_block_start":
            block = as_dict(data.get("content_block"))
            bkind = block.get("type")
            if bkind == "tool_use":
                idx = self._ntools
                self._ntools += 1
                index = data.get("index", -1)
                if is_int(index):
                    self._blocks[index] = idx
                inp = block.get("input")
                args = dumps(inp).decode() if inp else ""
                out.append(ToolStart(idx, as_str(block.get("id")), as_str(block.get("name")), args))
            elif bkind == "text" and as_str(block.get("text")):
                out.append(TextDelta(block["text"]))
            elif bkind == "thinking" and as_str(block.get("thinking")):
                out.append(ThinkingDelta(block["thinking"]))
        elif kind == "message_start":
            msg = as_dict(data.get("message"))
            out.append(Start(as_str(msg.get("id")), as_str(msg.get("model"))))
            out.append(self._usage(as_dict(msg.get("usage"))))
        elif kind == "message_delta":
            u = as_dict(data.get("usage"))
            if thinking_tokens(u) is not None:
                self._thinking = thinking_tokens(u)
            out.append(self._usage(u))
            delta = as_dict(data.get("delta"))
            reason = delta.get("stop_reason")
            if reason is not None:
                stop = _STOP_IN.get(reason, "end") if isinstance(reason, str) else "end"
                seq = delta.get("stop_sequence")
                out.append(Stop(stop, seq if isinstance(seq, str) else None))
        elif kind == "message_stop":
            self.done = True
            out.append(END)
        elif kind == "error":
            self.done = True
            err = as_dict(data.get("error"))
            message = as_str(err.get("message")) or "The upstream provider failed."
            out.append(Failure(message, _ANTHROPIC_KINDS.get(as_str(err.get("type")), "server")))

    def finish(self) -> list[Event]:
        if self.done:
            return []
        self.done = True
        return [Failure(STREAM_TRUNCATED)]


_TEXT, _THINKING, _TOOL = 1, 2, 3


class AnthropicStreamEncoder:
    """Form events -> Messages SSE: opens and closes content blocks as the kind of delta changes,
    and holds the stop reason and usage for the final ``message_delta`` (Anthropic reports them last)."""

    __slots__ = ("_cur_index", "_cur_kind", "_next_index", "_started", "_stop", "_tools", "_usage")

    def __init__(self) -> None:
        self._started = False
        self._next_index = 0
        self._cur_kind = 0
        self._cur_index = -1
        self._tools: dict[int, int] = {}  # tool call index -> content block index
        self._stop: tuple[str, str | None] = ("end_turn", None)
        self._usage: Usage | None = None

    def _start(self, msg_id: str, model: str) -> bytes:
        self._started = True
        msg = {
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return encode_event("message_start", dumps({"type": "message_start", "message": msg}))

    def _close(self) -> bytes:
        if not self._cur_kind:
            return b""
        self._cur_kind = 0
        index = str(self._cur_index).encode()
        return b'event: content_block_stop\ndata: {"type":"content_block_stop","index":' + index + b"}\n\n"

    def _open(self, kind: int, block: dict[str, Any]) -> bytes:
        out = self._close()
        self._cur_kind = kind
        self._cur_index = self._next_index
        self._next_index += 1
        ev = {"type": "content_block_start", "index": self._cur_index, "content_block": block}
        return out + encode_event("content_block_start", dumps(ev))

    @staticmethod
    def _delta(index: int, delta: dict[str, Any]) -> bytes:
        ev = {"type": "content_block_delta", "index": index, "delta": delta}
        return encode_event("content_block_delta", dumps(ev))

    def encode(self, events: list[Event]) -> bytes:
        out = b""
        for ev in events:
            t = type(ev)
            if t is TextDelta:
                if self._cur_kind != _TEXT:
                    out += self._open(_TEXT, {"type": "text", "text": ""})
                out += self._delta(self._cur_index, {"type": "text_delta", "text": ev.text})  # type: ignore[union-attr]
            elif t is ToolDelta:
                block = self._tools.get(ev.index)  # type: ignore[union-attr]
                if block is not None:
                    out += self._delta(block, {"type": "input_json_delta", "partial_json": ev.arguments})  # type: ignore[union-attr]
            elif t is ThinkingDelta:
                if self._cur_kind != _THINKING:
                    out += self._open(_THINKING, {"type": "thinking", "thinking": "", "signature": ""})
                out += self._delta(self._cur_index, {"type": "thinking_delta", "thinking": ev.text})  # type: ignore[union-attr]
            elif t is UsageUpdate:
                self._usage = ev.usage  # type: ignore[union-attr]
            elif t is ToolStart:
                call_id = ev.id or f"call_{ev.index}"  # type: ignore[union-attr]
                out += self._open(_TOOL, {"type": "tool_use", "id": call_id, "name": ev.name, "input": {}})  # type: ignore[union-attr]
                self._tools[ev.index] = self._cur_index  # type: ignore[union-attr]
                if ev.arguments:  # type: ignore[union-attr]
                    out += self._delta(
                        self._cur_index, {"type": "input_json_delta", "partial_json": ev.arguments}
                    )  # type: ignore[union-attr]
            elif t is Start:
                if not self._started:
                    out += self._start(ev.id, ev.model)  # type: ignore[union-attr]
            elif t is Stop:
                self._stop = (_STOP_OUT[ev.reason], ev.sequence)  # type: ignore[union-attr]
            elif t is End:
                out += self._end()
            elif t is Failure:
                out += stream_error(Api.ANTHROPIC, ev.message, ev.kind)  # type: ignore[union-attr]
        return out

    def _end(self) -> bytes:
        out = b"" if self._started else self._start("", "")
        out += self._close()
        reason, seq = self._stop
        delta = {"stop_reason": reason, "stop_sequence": seq}
        ev = {"type": "message_delta", "delta": delta, "usage": anthropic_usage(self._usage or Usage())}
        return (
            out
            + encode_event("message_delta", dumps(ev))
            + b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
        )


StreamDecoder = AnthropicStreamDecoder
