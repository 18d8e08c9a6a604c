"""Bedrock Converse answers and ConverseStream event streams -> the canonical form (provider side
only: ``encode_response`` is never needed, no client speaks Converse).

A ConverseStream answer is AWS's binary event stream (:mod:`.eventstream`): one JSON payload per
frame, named by its ``:event-type`` header; an ``exception`` frame ends the stream with an error.
The stream's last event is ``metadata`` (the usage), after ``messageStop`` (the stop reason).
"""

from __future__ import annotations

import os
from typing import Any

import orjson

from sidegate.translate.base import Usage
from sidegate.translate.codecs.bedrock.eventstream import EventStreamDecoder, EventStreamError, Frame
from sidegate.translate.codecs.form import (
    END,
    Event,
    Failure,
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
    ToolStart,
    UsageUpdate,
)
from sidegate.translate.common import (
    MALFORMED_EVENT,
    STREAM_TRUNCATED,
    as_count,
    as_dict,
    as_list,
    as_str,
    bad_param,
    is_int,
)

__all__ = ["StreamDecoder", "decode_response", "encode_response", "new_id", "parse_bedrock_usage"]

# Converse's stopReason -> the form's. A guardrail or content filter stopping the answer is a
# refusal (OpenAI clients see content_filter); a malformed model output ends the answer as is.
_STOP_IN = {
    "end_turn": "end",
    "tool_use": "tool_use",
    "max_tokens": "length",
    "stop_sequence": "stop_sequence",
    "guardrail_intervened": "refusal",
    "content_filtered": "refusal",
    "model_context_window_exceeded": "length",
    "malformed_model_output": "end",
    "malformed_tool_use": "end",
}
# ConverseStream exception frames (``:exception-type``) -> the form's failure kinds.
_EXCEPTION_KINDS = {
    "throttlingException": "rate_limit",
    "validationException": "invalid_request",
    "modelStreamErrorException": "server",
    "internalServerException": "server",
    "serviceUnavailableException": "server",
}


def new_id() -> str:
    """An answer id: Converse answers carry none (``x-amzn-requestid`` is a header the translator
    does not see), and clients expect one. Tests replace this function for fixed ids."""
    return "msg_bdrk_" + os.urandom(12).hex()


def parse_bedrock_usage(u: Any) -> Usage:
    """Converse ``usage``: ``inputTokens`` is the uncached part (AWS's prompt-caching semantics),
    so the form's input (every prompt token) adds the cache reads and writes."""
    u = as_dict(u)
    read = as_count(u.get("cacheReadInputTokens"))
    written = as_count(u.get("cacheWriteInputTokens"))
    return Usage(
        input_tokens=as_count(u.get("inputTokens")) + read + written,
        output_tokens=as_count(u.get("outputTokens")),
        cached_tokens=read,
        cache_creation_tokens=written,
    )


def _stop(reason: Any, fields: Any) -> tuple[str, str | None]:
    """(form stop, matched sequence): Claude models report the matched stop sequence in
    ``additionalModelResponseFields.stop_sequence``."""
    stop = _STOP_IN.get(reason, "end") if isinstance(reason, str) else "end"
    seq = as_dict(fields).get("stop_sequence")
    return stop, (seq if stop == "stop_sequence" and isinstance(seq, str) else None)


def decode_response(body: dict[str, Any]) -> Response:
    """A Converse answer -> the form, read leniently (a wrong type counts as absent). Redacted
    reasoning, citations and guardrail traces have no place in the form (documented losses)."""
    msg = as_dict(as_dict(body.get("output")).get("message"))
    content: list[Part] = []
    for block in as_list(msg.get("content")):
        block = as_dict(block)
        if "text" in block:
            content.append(Text(as_str(block["text"])))
        elif "toolUse" in block:
            use = as_dict(block["toolUse"])
            content.append(
                ToolCall(as_str(use.get("toolUseId")), as_str(use.get("name")), as_dict(use.get("input")))
            )
        elif "reasoningContent" in block:
            text = as_dict(as_dict(block["reasoningContent"]).get("reasoningText"))
            if text:
                content.append(Thinking(as_str(text.get("text")), as_str(text.get("signature"))))
    stop, seq = _stop(body.get("stopReason"), body.get("additionalModelResponseFields"))
    return Response(new_id(), "", content, stop, seq, parse_bedrock_usage(body.get("usage")))


def encode_response(resp: Response, created: int) -> dict[str, Any]:
    """Never called: no client speaks Converse."""
    raise bad_param("model", "Bedrock Converse is a provider API only.")


class BedrockStreamDecoder:
    """ConverseStream bytes (binary frames, split anywhere) -> form events, one JSON parse per
    frame. Tool calls are numbered by call (the form's index), content blocks mapped to them."""

    __slots__ = ("_blocks", "_frames", "_ntools", "_stopped", "done", "model", "usage")

    def __init__(self) -> None:
        self.model = ""
        """Converse events name no model: the translator sets the one the try asked for."""
        self._frames = EventStreamDecoder()
        self._blocks: dict[int, int] = {}  # contentBlockIndex -> tool call index
        self._ntools = 0
        self._stopped = False
        self.done = False
        self.usage: Usage | None = None

    def feed(self, chunk: bytes) -> list[Event]:
        out: list[Event] = []
        if self.done:
            return out
        broken = False
        try:
            frames = self._frames.feed(chunk)
        except EventStreamError as err:
            frames, broken = err.frames, True  # the frames before the fault still count
        for frame in frames:
            self._frame(frame, out)
            if self.done:
                return out
        if broken:
            self.done = True
            out.append(Failure(MALFORMED_EVENT))
        return out

    def _frame(self, frame: Frame, out: list[Event]) -> None:
        headers = frame.headers
        kind = headers.get(":message-type")
        if kind == "error":  # a protocol-level error: code and message in headers, no payload
            self.done = True
            message = as_str(headers.get(":error-message")) or "The upstream provider failed."
            out.append(Failure(message))
            return
        try:
            data = orjson.loads(frame.payload)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            self.done = True
            out.append(Failure(MALFORMED_EVENT))
            return
        if kind == "exception":
            self.done = True
            etype = as_str(headers.get(":exception-type"))
            message = as_str(data.get("message")) or as_str(data.get("Message"))
            out.append(
                Failure(
                    message or f"The upstream provider failed ({etype}).",
                    _EXCEPTION_KINDS.get(etype, "server"),
                )
            )
            return
        event = headers.get(":event-type")
        if event == "contentBlockDelta":
            delta = as_dict(data.get("delta"))
            if "text" in delta:
                out.append(TextDelta(as_str(delta["text"])))
            elif "toolUse" in delta:
                index = data.get("contentBlockIndex")
                idx = self._blocks.get(index) if is_int(index) else None
                part = as_str(as_dict(delta["toolUse"]).get("input"))
                if part and idx is not None:
                    out.append(ToolDelta(idx, part))
            elif "reasoningContent" in delta:
                text = as_dict(delta["reasoningContent"]).get("text")
                if isinstance(text, str) and text:  # a signature delta has no form event (a loss)
                    out.append(ThinkingDelta(text))
        elif event == "contentBlockStart":
            use = as_dict(as_dict(data.get("start")).get("toolUse"))
            if use:
                idx = self._ntools
                self._ntools += 1
                index = data.get("contentBlockIndex")
                if is_int(index):
                    self._blocks[index] = idx
                out.append(ToolStart(idx, as_str(use.get("toolUseId")), as_str(use.get("name")), ""))
        elif event == "messageStart":
            out.append(Start(new_id(), self.model))
        elif event == "messageStop":
            stop, seq = _stop(data.get("stopReason"), data.get("additionalModelResponseFields"))
            self._stopped = True
            out.append(Stop(stop, seq))
        elif event == "metadata":
            # The tokens were spent either way (the usage is kept for the true-up), but an answer
            # without its stop reason is incomplete.
            self.usage = parse_bedrock_usage(data.get("usage"))
            self.done = True
            out.append(UsageUpdate(self.usage, None))
            out.append(END if self._stopped else Failure(STREAM_TRUNCATED))
        # contentBlockStop and event types added later: nothing for the form

    def finish(self) -> list[Event]:
        """The stream ended: without its ``metadata`` event (or with a frame cut short) the answer
        is incomplete, and the client gets a terminal error instead of a truncated success."""
        if self.done:
            return []
        self.done = True
        return [Failure(STREAM_TRUNCATED)]


StreamDecoder = BedrockStreamDecoder
