"""Responses API streams <-> form events, event by event (nothing is held back but the text and
arguments an item's ``.done`` event and ``response.completed`` must repeat).

Encoder (a Responses client): ``response.created`` and ``response.in_progress`` on the provider's
first event; each text run, reasoning run and tool call is one output item (``output_item.added``,
its deltas, then its ``.done`` events and ``output_item.done`` when the next item starts or the
answer ends); the end is ``response.completed`` (or ``response.incomplete`` for max tokens and
refusals) carrying the whole response with usage. A failure is an ``error`` event, flat as the API
reference documents it and with the nested ``error`` object the live API sends (the ``openai`` SDK
raises ``APIError`` on that one), then ``response.failed``. Every event has its ``type`` in the SSE
``event:`` line and in the data, and a ``sequence_number``.

Decoder (a provider reached through Responses): the reverse, with usage from ``response.completed``.
"""

from __future__ import annotations

from typing import Any

from sidegate.sse import SseParser, encode_event
from sidegate.translate.base import Usage
from sidegate.translate.codecs.form import (
    END,
    End,
    Event,
    Failure,
    Start,
    Stop,
    TextDelta,
    ThinkingDelta,
    ToolDelta,
    ToolStart,
    UsageUpdate,
)
from sidegate.translate.codecs.responses.shapes import (
    INCOMPLETE,
    IdFactory,
    envelope,
    function_item,
    message_item,
    new_id,
    parse_responses_usage,
    reasoning_item,
    responses_usage,
    text_part,
)
from sidegate.translate.common import (
    MALFORMED_EVENT,
    STREAM_TRUNCATED,
    as_dict,
    as_str,
    dumps,
    is_int,
    loads_object,
)

_ERROR_CODES = {
    "server": "server_error",
    "rate_limit": "rate_limit_exceeded",
    "invalid_request": "invalid_prompt",
}
_ERROR_TYPES = {
    "server": "server_error",
    "rate_limit": "rate_limit_error",
    "invalid_request": "invalid_request_error",
}
_KINDS = {
    "rate_limit_exceeded": "rate_limit",
    "rate_limit_error": "rate_limit",
    "invalid_prompt": "invalid_request",
}
_KINDS["invalid_request_error"] = "invalid_request"

_MESSAGE, _REASONING, _TOOL = 1, 2, 3


class ResponsesStreamEncoder:
    __slots__ = (
        "_created",
        "_echo",
        "_ids",
        "_item",
        "_kind",
        "_output",
        "_parts",
        "_resp",
        "_seq",
        "_stop",
        "_thinking",
        "_tools",
        "_usage",
        "done",
    )

    def __init__(self, *, created: int, ids: IdFactory = new_id, echo: dict[str, Any] | None = None) -> None:
        self._created = created
        self._ids = ids
        self._echo = echo
        self._seq = 0
        self._resp: dict[str, Any] | None = None  # the envelope, once started
        self._output: list[dict[str, Any]] = []  # every item so far, in output_index order
        self._kind = 0  # the open item's kind (0: none)
        self._item: dict[str, Any] = {}
        self._parts: list[str] = []  # the open item's text or argument fragments
        self._tools: dict[int, dict[str, Any]] = {}  # form tool index -> its function_call item
        self._stop = "end"
        self._usage: Usage | None = None
        self._thinking: int | None = None
        self.done = False

    def _ev(self, etype: str, body: dict[str, Any]) -> bytes:
        event = {"type": etype}  # first, as the API writes it (cheap to spot for a reader)
        event.update(body)
        event["sequence_number"] = self._seq
        self._seq += 1
        return encode_event(etype, dumps(event))

    def _snapshot(self, status: str) -> dict[str, Any]:
        return {**self._resp, "status": status}  # type: ignore[dict-item]

    def _start(self, model: str) -> bytes:
        # The client's id is the gateway's own (``resp_``), never the provider's message id.
        self._resp = envelope(self._ids("resp"), model, self._created, "in_progress", self._echo)
        return self._ev("response.created", {"response": self._snapshot("in_progress")}) + self._ev(
            "response.in_progress", {"response": self._snapshot("in_progress")}
        )

    def _open(self, kind: int, item: dict[str, Any]) -> bytes:
        out = self._close()
        self._kind = kind
        self._item = item
        self._output.append(item)
        index = len(self._output) - 1
        out += self._ev("response.output_item.added", {"output_index": index, "item": item})
        if kind in (_MESSAGE, _REASONING):
            part = text_part("") if kind == _MESSAGE else {"type": "reasoning_text", "text": ""}
            out += self._ev(
                "response.content_part.added",
                {"item_id": item["id"], "output_index": index, "content_index": 0, "part": part},
            )
        return out

    def _close(self) -> bytes:
        kind, item = self._kind, self._item
        if not kind:
            return b""
        self._kind = 0
        index = len(self._output) - 1  # the open item is always the last one
        head = {"item_id": item["id"], "output_index": index}
        text = "".join(self._parts)
        self._parts = []
        if kind == _TOOL:
            item["arguments"] = text
            out = self._ev("response.function_call_arguments.done", {**head, "arguments": text})
        elif kind == _MESSAGE:
            part = text_part(text)
            item["content"] = [part]
            out = self._ev(
                "response.output_text.done", {**head, "content_index": 0, "text": text, "logprobs": []}
            )
            out += self._ev("response.content_part.done", {**head, "content_index": 0, "part": part})
        else:
            part = {"type": "reasoning_text", "text": text}
            item["content"] = [part]
            out = self._ev("response.reasoning_text.done", {**head, "content_index": 0, "text": text})
            out += self._ev("response.content_part.done", {**head, "content_index": 0, "part": part})
        item["status"] = "completed"
        return out + self._ev("response.output_item.done", {"output_index": index, "item": item})

    def _delta(self, etype: str, text: str, content: bool) -> bytes:
        self._parts.append(text)
        body: dict[str, Any] = {"item_id": self._item["id"], "output_index": len(self._output) - 1}
        if content:
            body["content_index"] = 0
        body["delta"] = text
        if etype == "response.output_text.delta":
            body["logprobs"] = []
        return self._ev(etype, body)

    def encode(self, events: list[Event]) -> bytes:
        out = b""
        for ev in events:
            if self.done:
                break
            t = type(ev)
            if self._resp is None and t is not Start:
                out += self._start("")
            if t is TextDelta:
                if self._kind != _MESSAGE:
                    out += self._open(_MESSAGE, message_item(self._ids("msg"), None, "in_progress"))
                out += self._delta("response.output_text.delta", ev.text, True)  # type: ignore[union-attr]
            elif t is ToolDelta:
                out += self._tool_delta(ev)  # type: ignore[arg-type]
            elif t is ThinkingDelta:
                if self._kind != _REASONING:
                    out += self._open(
                        _REASONING, {**reasoning_item(self._ids("rs"), None), "status": "in_progress"}
                    )
                out += self._delta("response.reasoning_text.delta", ev.text, True)  # type: ignore[union-attr]
            elif t is ToolStart:
                item = function_item(self._ids("fc"), ev.id or f"call_{ev.index}", ev.name, "", "in_progress")  # type: ignore[union-attr]
                out += self._open(_TOOL, item)
                self._tools[ev.index] = item  # type: ignore[union-attr]
                if ev.arguments:  # type: ignore[union-attr]
                    out += self._delta("response.function_call_arguments.delta", ev.arguments, False)  # type: ignore[union-attr]
            elif t is UsageUpdate:
                self._usage, self._thinking = ev.usage, ev.thinking_tokens  # type: ignore[union-attr]
            elif t is Start:
                if self._resp is None:
                    out += self._start(ev.model)  # type: ignore[union-attr]
                elif ev.model and not self._resp["model"]:  # type: ignore[union-attr]
                    self._resp["model"] = ev.model  # type: ignore[union-attr]
            elif t is Stop:
                self._stop = ev.reason  # type: ignore[union-attr]
            elif t is End:
                out += self._end()
            elif t is Failure:
                out += self._fail(ev)  # type: ignore[arg-type]
        return out

    def _tool_delta(self, ev: ToolDelta) -> bytes:
        item = self._tools.get(ev.index)
        if item is None:
            return b""
        if item is self._item and self._kind == _TOOL:
            return self._delta("response.function_call_arguments.delta", ev.arguments, False)
        # A late fragment for a call already closed (a degraded provider): still the client's data.
        item["arguments"] += ev.arguments
        body = {"item_id": item["id"], "output_index": self._output.index(item), "delta": ev.arguments}
        return self._ev("response.function_call_arguments.delta", body)

    def _end(self) -> bytes:
        out = self._close()
        self.done = True
        reason = INCOMPLETE.get(self._stop)
        status = "incomplete" if reason else "completed"
        resp = self._snapshot(status)
        if reason:
            resp["incomplete_details"] = {"reason": reason}
        resp["output"] = self._output
        resp["usage"] = responses_usage(self._usage or Usage(), self._thinking)
        return out + self._ev("response.incomplete" if reason else "response.completed", {"response": resp})

    def _fail(self, ev: Failure) -> bytes:
        self.done = True
        code = _ERROR_CODES.get(ev.kind, "server_error")
        error = {
            "type": _ERROR_TYPES.get(ev.kind, "server_error"),
            "code": code,
            "message": ev.message,
            "param": None,
        }
        out = self._ev("error", {"code": code, "message": ev.message, "param": None, "error": error})
        resp = self._snapshot("failed")
        resp["error"] = {"code": code, "message": ev.message}
        resp["output"] = self._output
        return out + self._ev("response.failed", {"response": resp})


class ResponsesStreamDecoder:
    __slots__ = ("_parser", "_stop", "_tools", "done", "usage")

    def __init__(self) -> None:
        self._parser = SseParser()
        self._tools: dict[int, int] = {}  # output_index -> form tool index
        self._stop = "end"
        self.done = False
        self.usage: Usage | None = None

    def feed(self, chunk: bytes) -> list[Event]:
        out: list[Event] = []
        if self.done:
            return out
        for ev in self._parser.feed(chunk):
            if not ev.data.strip():
                continue
            data = loads_object(ev.data)
            if data is None:
                self.done = True
                out.append(Failure(MALFORMED_EVENT))
                break
            self._event(data, out)
            if self.done:
                break
        return out

    def _event(self, data: dict[str, Any], out: list[Event]) -> None:
        kind = data.get("type")
        if kind == "response.output_text.delta" or kind == "response.refusal.delta":
            out.append(TextDelta(as_str(data.get("delta"))))
        elif kind == "response.function_call_arguments.delta":
            index = data.get("output_index")
            tool = self._tools.get(index) if is_int(index) else None
            if tool is not None and as_str(data.get("delta")):
                out.append(ToolDelta(tool, data["delta"]))
        elif kind == "response.reasoning_text.delta" or kind == "response.reasoning_summary_text.delta":
            out.append(ThinkingDelta(as_str(data.get("delta"))))
        elif kind == "response.output_item.added":
            item = as_dict(data.get("item"))
            index = data.get("output_index")
            if item.get("type") == "function_call" and is_int(index):
                tool = self._tools[index] = len(self._tools)
                args = as_str(item.get("arguments"))
                out.append(ToolStart(tool, as_str(item.get("call_id")), as_str(item.get("name")), args))
        elif kind == "response.created":
            resp = as_dict(data.get("response"))
            out.append(Start(as_str(resp.get("id")), as_str(resp.get("model"))))
        elif kind == "response.completed" or kind == "response.incomplete":
            self._finish(as_dict(data.get("response")), out)
        elif kind == "response.failed":
            self.done = True
            err = as_dict(as_dict(data.get("response")).get("error"))
            out.append(
                Failure(as_str(err.get("message")) or "The upstream provider failed.", self._kind(err))
            )
        elif kind == "error":
            self.done = True
            err = as_dict(data.get("error")) or data
            out.append(
                Failure(as_str(err.get("message")) or "The upstream provider failed.", self._kind(err))
            )

    @staticmethod
    def _kind(err: dict[str, Any]) -> str:
        return _KINDS.get(as_str(err.get("code")) or as_str(err.get("type")), "server")

    def _finish(self, resp: dict[str, Any], out: list[Event]) -> None:
        self.done = True
        parsed = parse_responses_usage(resp.get("usage"))
        if parsed is not None:
            self.usage = parsed[0]
            out.append(UsageUpdate(parsed[0], parsed[1]))
        reason = as_dict(resp.get("incomplete_details")).get("reason")
        if reason == "max_output_tokens":
            stop = "length"
        elif reason == "content_filter":
            stop = "refusal"
        else:
            stop = "tool_use" if self._tools else "end"
        out.append(Stop(stop, None))
        out.append(END)

    def finish(self) -> list[Event]:
        if self.done:
            return []
        self.done = True
        return [Failure(STREAM_TRUNCATED)]
