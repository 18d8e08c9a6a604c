"""A Responses provider's SSE stream -> form events (a Chat or Messages client on a provider
reached through the Responses API), with usage from ``response.completed``."""

from __future__ import annotations

from typing import Any

from sidegate.translate.codecs.form import (
    END,
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
from sidegate.translate.codecs.responses.shapes import parse_responses_usage
from sidegate.translate.codecs.util import JsonEventDecoder
from sidegate.translate.common import (
    STREAM_TRUNCATED,
    as_dict,
    as_list,
    as_str,
    is_int,
)

_KINDS = {
    "rate_limit_exceeded": "rate_limit",
    "rate_limit_error": "rate_limit",
    "invalid_prompt": "invalid_request",
}
_KINDS["invalid_request_error"] = "invalid_request"


class ResponsesStreamDecoder(JsonEventDecoder):
    __slots__ = ("_stop", "_streamed", "_tools")

    def __init__(self) -> None:
        super().__init__()
        self._tools: dict[int, int] = {}  # output_index -> form tool index
        self._streamed: set[Any] = set()  # output indexes whose content came as deltas
        self._stop = "end"

    def _event(self, data: dict[str, Any], out: list[Event]) -> None:
        kind = data.get("type")
        if kind == "response.output_text.delta" or kind == "response.refusal.delta":
            delta = as_str(data.get("delta"))
            if delta:
                self._streamed.add(data.get("output_index"))
                out.append(TextDelta(delta))
        elif kind == "response.function_call_arguments.delta":
            index = data.get("output_index")
            tool = self._tools.get(index) if is_int(index) else None
            if tool is not None and as_str(data.get("delta")):
                self._streamed.add(index)
                out.append(ToolDelta(tool, data["delta"]))
        elif kind == "response.reasoning_text.delta" or kind == "response.reasoning_summary_text.delta":
            delta = as_str(data.get("delta"))
            if delta:
                self._streamed.add(data.get("output_index"))
                out.append(ThinkingDelta(delta))
        elif kind == "response.output_item.added":
            item = as_dict(data.get("item"))
            index = data.get("output_index")
            if item.get("type") == "function_call" and is_int(index) and index not in self._tools:
                tool = self._tools[index] = len(self._tools)
                args = as_str(item.get("arguments"))
                if args:
                    self._streamed.add(index)
                out.append(ToolStart(tool, as_str(item.get("call_id")), as_str(item.get("name")), args))
        elif kind == "response.output_item.done":
            self._item_done(as_dict(data.get("item")), data.get("output_index"), out)
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

    def _item_done(self, item: dict[str, Any], index: Any, out: list[Event]) -> None:
        """An item whose content came without deltas (servers that send a call or a text whole):
        its content now, so nothing of it is lost."""
        if index in self._streamed or not is_int(index):
            return
        kind = item.get("type")
        if kind == "function_call":
            args = as_str(item.get("arguments"))
            if index not in self._tools:
                self._tools[index] = len(self._tools)
                out.append(
                    ToolStart(self._tools[index], as_str(item.get("call_id")), as_str(item.get("name")), args)
                )
            elif args:
                out.append(ToolDelta(self._tools[index], args))
        elif kind == "message" or kind == "reasoning":
            parts = [as_dict(p) for p in as_list(item.get("content"))]
            if kind == "reasoning" and not parts:
                parts = [as_dict(p) for p in as_list(item.get("summary"))]
            text = "".join(as_str(p.get("text")) or as_str(p.get("refusal")) for p in parts)
            if text:
                out.append(TextDelta(text) if kind == "message" else ThinkingDelta(text))
        self._streamed.add(index)

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
