"""Form events -> a Responses client's SSE stream, event by event (nothing is held back but the text and
arguments an item's ``.done`` event and ``response.completed`` must repeat).

Encoder (a Responses client): ``response.created`` and ``response.in_progress`` on the provider's
first event; each text run, reasoning run and tool call is one output item (``output_item.added``,
its deltas, then its ``.done`` events and ``output_item.done`` when the next item starts or the
answer ends); the end is ``response.completed`` (or ``response.incomplete`` for max tokens and
refusals) carrying the whole response with usage. A failure is an ``error`` event, flat as the API
reference documents it and with the nested ``error`` object the live API sends (the ``openai`` SDK
raises ``APIError`` on that one), then ``response.failed``. Every event has its ``type`` in the SSE
``event:`` line and in the data, and a ``sequence_number``.

The reverse direction (a provider reached through Responses) is :mod:`.decode`.
"""

from __future__ import annotations

from typing import Any

from sidegate.sse import encode_event
from sidegate.translate.base import Usage
from sidegate.translate.codecs.form import (
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
    reasoning_item,
    responses_usage,
    text_part,
)
from sidegate.translate.common import (
    dumps,
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

_MESSAGE, _REASONING, _TOOL = 1, 2, 3
_DELTAS = {
    _MESSAGE: b"response.output_text.delta",
    _REASONING: b"response.reasoning_text.delta",
    _TOOL: b"response.function_call_arguments.delta",
}


class ResponsesStreamEncoder:
    __slots__ = (
        "_call_ids",
        "_created",
        "_delta_head",
        "_delta_tail",
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
        self._call_ids: set[str] = set()  # the call ids given so far (each once: see _call_id)
        self._stop = "end"
        self._usage: Usage | None = None
        self._thinking: int | None = None
        self._delta_head = self._delta_tail = b""
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
        etype = _DELTAS[kind]
        self._delta_template(etype, item["id"], kind != _TOOL)
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

    def _delta_template(self, etype: bytes, item_id: str, content: bool) -> None:
        """The open item's delta event as bytes around the fragment: the hot path (one event per
        provider delta) then costs one ``dumps`` of a string, no dict."""
        index = str(len(self._output) - 1).encode()
        head = b"event: " + etype + b'\ndata: {"type":"' + etype + b'","item_id":' + dumps(item_id)
        head += b',"output_index":' + index + (b',"content_index":0' if content else b"") + b',"delta":'
        self._delta_head = head
        logprobs = etype == b"response.output_text.delta"
        self._delta_tail = (b',"logprobs":[]' if logprobs else b"") + b',"sequence_number":'

    def _delta(self, text: str) -> bytes:
        self._parts.append(text)
        seq = self._seq
        self._seq += 1
        return self._delta_head + dumps(text) + self._delta_tail + str(seq).encode() + b"}\n\n"

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
                out += self._delta(ev.text)  # type: ignore[union-attr]
            elif t is ToolDelta:
                out += self._tool_delta(ev)  # type: ignore[arg-type]
            elif t is ThinkingDelta:
                if self._kind != _REASONING:
                    out += self._open(
                        _REASONING, {**reasoning_item(self._ids("rs"), None), "status": "in_progress"}
                    )
                out += self._delta(ev.text)  # type: ignore[union-attr]
            elif t is ToolStart:
                item = function_item(self._ids("fc"), self._call_id(ev.id or f"call_{ev.index}"), ev.name, "",  # type: ignore[union-attr]
                                     "in_progress")  # fmt: skip
                out += self._open(_TOOL, item)
                self._tools[ev.index] = item  # type: ignore[union-attr]
                if ev.arguments:  # type: ignore[union-attr]
                    out += self._delta(ev.arguments)  # type: ignore[union-attr]
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

    def _call_id(self, want: str) -> str:
        """``want``, or ``want_2``, ``want_3``... if an earlier call of this response has it. Clients key
        a response's tool calls on their call id (the openai SDK stops a stream with two items of one
        id); a provider stream that repeats one (fuzzing found it with Bedrock's toolUseId) must not
        break the client. Its result then names the id given here, which the provider never issued:
        the provider's own error, on the next turn, says so."""
        call_id, n = want, 1
        while call_id in self._call_ids:
            n += 1
            call_id = f"{want}_{n}"
        self._call_ids.add(call_id)
        return call_id

    def _tool_delta(self, ev: ToolDelta) -> bytes:
        item = self._tools.get(ev.index)
        if item is None:
            return b""
        if item is self._item and self._kind == _TOOL:
            return self._delta(ev.arguments)
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
