"""OpenAI Chat Completions answers <-> the canonical form: bodies and SSE streams."""

from __future__ import annotations

from typing import Any

import orjson

from sidegate.errors import Api
from sidegate.sse import SseParser
from sidegate.translate.base import Usage
from sidegate.translate.codecs.form import (
    END,
    End,
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
from sidegate.translate.codecs.util import stream_error
from sidegate.translate.common import (
    MALFORMED_EVENT,
    STREAM_TRUNCATED,
    as_dict,
    as_list,
    as_str,
    dumps,
    is_int,
)
from sidegate.translate.usage import openai_usage, parse_openai_usage

_FINISH_IN = {"stop": "end", "length": "length", "tool_calls": "tool_use", "function_call": "tool_use"}
_FINISH_IN["content_filter"] = "refusal"
_FINISH_OUT = {"end": "stop", "stop_sequence": "stop", "pause": "stop", "length": "length"}
_FINISH_OUT.update(tool_use="tool_calls", refusal="content_filter")


# ------------------------------------------------------------------------------------ responses


def _tool_input(arguments: str) -> dict[str, Any]:
    try:
        parsed = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"_raw_arguments": arguments}


def decode_response(body: dict[str, Any]) -> Response:
    """A chat completion -> the form (first choice only: the form has one answer). Read leniently:
    ``reasoning_content`` or vLLM's ``reasoning``, vLLM's matched ``stop_reason``."""
    choices = as_list(body.get("choices"))
    choice = as_dict(choices[0]) if choices else {}
    msg = as_dict(choice.get("message"))
    content: list[Part] = []
    reasoning = msg.get("reasoning_content") or msg.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        content.append(Thinking(reasoning))
    for key in ("content", "refusal"):
        text = msg.get(key)
        if isinstance(text, str) and text:
            content.append(Text(text))
    for call in as_list(msg.get("tool_calls")):
        call = as_dict(call)
        fn = as_dict(call.get("function"))
        args = as_str(fn.get("arguments"))
        content.append(ToolCall(as_str(call.get("id")), as_str(fn.get("name")), _tool_input(args), args))
    finish, matched = choice.get("finish_reason"), choice.get("stop_reason")
    if finish == "stop" and isinstance(matched, str):
        stop, seq = "stop_sequence", matched
    else:
        stop, seq = (_FINISH_IN.get(finish, "end") if isinstance(finish, str) else "end"), None
    return Response(
        as_str(body.get("id")),
        as_str(body.get("model")),
        content,
        stop,
        seq,
        parse_openai_usage(body.get("usage")) or Usage(),
    )


def openai_tool_calls(content: list[Part]) -> list[dict[str, Any]]:
    """The tool calls among ``content`` as OpenAI ``tool_calls`` (requests and responses alike)."""
    return [
        {
            "id": p.id,
            "type": "function",
            "function": {
                "name": p.name,
                "arguments": p.raw if p.raw is not None else dumps(p.input).decode(),
            },
        }
        for p in content
        if type(p) is ToolCall
    ]


def encode_response(resp: Response, created: int) -> dict[str, Any]:
    """The form -> a chat completion; thinking goes to ``reasoning_content``, the field
    OpenAI-compatible clients read."""
    texts = [p.text for p in resp.content if type(p) is Text]
    thoughts = [p.text for p in resp.content if type(p) is Thinking]
    calls = openai_tool_calls(resp.content)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    if thoughts:
        message["reasoning_content"] = "".join(thoughts)
    return {
        "id": resp.id,
        "object": "chat.completion",
        "created": created,
        "model": resp.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _FINISH_OUT.get(resp.stop, "stop"),
            }
        ],
        "usage": openai_usage(resp.usage, resp.thinking_tokens),
    }


# ------------------------------------------------------------------------------------- streams


class OpenAIStreamDecoder:
    """``chat.completion.chunk`` SSE -> form events. A stream that saw a ``finish_reason`` but lost
    its ``[DONE]`` still ends normally: the answer was complete."""

    __slots__ = ("_parser", "_seen", "_started", "_stopped", "done", "usage")

    def __init__(self) -> None:
        self._parser = SseParser()
        self._started = False
        self._stopped = False
        self._seen: set[int] = set()
        self.done = False
        self.usage: Usage | None = None

    def feed(self, chunk: bytes) -> list[Event]:
        out: list[Event] = []
        if self.done:
            return out
        for ev in self._parser.feed(chunk):
            data = ev.data
            if data == b"[DONE]":
                self.done = True
                out.append(END)
                break
            if not data.strip():
                continue
            try:
                obj = orjson.loads(data)
            except orjson.JSONDecodeError:
                obj = None
            if not isinstance(obj, dict):
                self.done = True
                out.append(Failure(MALFORMED_EVENT))
                break
            if obj.get("error"):
                self.done = True
                err = obj["error"]
                msg = as_str(err.get("message")) if isinstance(err, dict) else str(err)
                out.append(Failure(msg or "The upstream provider failed."))
                break
            self._chunk(obj, out)
        return out

    def _chunk(self, obj: dict[str, Any], out: list[Event]) -> None:
        if not self._started:
            self._started = True
            out.append(Start(as_str(obj.get("id")), as_str(obj.get("model"))))
        usage = parse_openai_usage(obj.get("usage"))
        if usage is not None:
            self.usage = usage
            out.append(UsageUpdate(usage, None))
        for choice in as_list(obj.get("choices")):
            choice = as_dict(choice)
            if choice.get("index", 0) != 0:
                continue
            delta = as_dict(choice.get("delta"))
            reasoning = as_str(delta.get("reasoning_content")) or as_str(delta.get("reasoning"))
            if reasoning:
                out.append(ThinkingDelta(reasoning))
            text = as_str(delta.get("content"))
            if text:
                out.append(TextDelta(text))
            for call in as_list(delta.get("tool_calls")):
                if not isinstance(call, dict) or not is_int(call.get("index", 0)):
                    continue
                oi = call.get("index", 0)
                fn = as_dict(call.get("function"))
                args = as_str(fn.get("arguments"))
                if oi not in self._seen:
                    self._seen.add(oi)
                    out.append(ToolStart(oi, as_str(call.get("id")), as_str(fn.get("name")), args))
                elif args:
                    out.append(ToolDelta(oi, args))
            finish = choice.get("finish_reason")
            if finish:
                self._stopped = True
                matched = choice.get("stop_reason")
                if finish == "stop" and isinstance(matched, str):
                    out.append(Stop("stop_sequence", matched))
                else:
                    out.append(
                        Stop(_FINISH_IN.get(finish, "end") if isinstance(finish, str) else "end", None)
                    )

    def finish(self) -> list[Event]:
        if self.done:
            return []
        self.done = True
        return [END] if self._stopped else [Failure(STREAM_TRUNCATED)]


class OpenAIStreamEncoder:
    """Form events -> ``chat.completion.chunk`` SSE. The chunk prefix (id, created, model) is
    serialised once per stream and each delta appended: one small ``dumps`` per event."""

    __slots__ = ("_created", "_prefix", "_thinking", "_usage", "_wants_usage")

    _SUFFIX = b',"logprobs":null,"finish_reason":null}]}\n\n'

    def __init__(self, *, client_wants_usage: bool, created: int) -> None:
        self._wants_usage = client_wants_usage
        self._created = created
        self._usage: Usage | None = None
        self._thinking: int | None = None
        self._head("", "")

    def _head(self, msg_id: str, model: str) -> None:
        head = dumps(
            {"id": msg_id, "object": "chat.completion.chunk", "created": self._created, "model": model}
        )
        self._prefix = b"data: " + head[:-1] + b',"choices":[{"index":0,"delta":'

    def encode(self, events: list[Event]) -> bytes:
        out: list[bytes] = []
        for ev in events:
            t = type(ev)
            if t is TextDelta:
                out.append(self._prefix + dumps({"content": ev.text}) + self._SUFFIX)  # type: ignore[union-attr]
            elif t is ToolDelta:
                call = {"index": ev.index, "function": {"arguments": ev.arguments}}  # type: ignore[union-attr]
                out.append(self._prefix + dumps({"tool_calls": [call]}) + self._SUFFIX)
            elif t is ThinkingDelta:
                out.append(self._prefix + dumps({"reasoning_content": ev.text}) + self._SUFFIX)  # type: ignore[union-attr]
            elif t is UsageUpdate:
                self._usage, self._thinking = ev.usage, ev.thinking_tokens  # type: ignore[union-attr]
            elif t is ToolStart:
                fn = {"name": ev.name, "arguments": ev.arguments}  # type: ignore[union-attr]
                call = {"index": ev.index, "id": ev.id, "type": "function", "function": fn}  # type: ignore[union-attr]
                out.append(self._prefix + dumps({"tool_calls": [call]}) + self._SUFFIX)
            elif t is Start:
                self._head(ev.id, ev.model)  # type: ignore[union-attr]
                out.append(self._prefix + b'{"role":"assistant","content":""}' + self._SUFFIX)
            elif t is Stop:
                finish = _FINISH_OUT[ev.reason].encode()  # type: ignore[union-attr]
                out.append(self._prefix + b'{},"logprobs":null,"finish_reason":"' + finish + b'"}]}\n\n')
            elif t is End:
                if self._wants_usage:
                    usage = dumps(openai_usage(self._usage or Usage(), self._thinking))
                    out.append(
                        self._prefix[: -len(b'[{"index":0,"delta":')] + b'[],"usage":' + usage + b"}\n\n"
                    )
                out.append(b"data: [DONE]\n\n")
            elif t is Failure:
                out.append(stream_error(Api.OPENAI, ev.message, ev.kind))  # type: ignore[union-attr]
        return b"".join(out)


StreamDecoder = OpenAIStreamDecoder
