"""Pair: Anthropic Messages client -> OpenAI Chat Completions (or OpenAI-compatible) provider.

The request, response, error and stream translation of this one pair. Mapping decisions are
tabulated in docs/translation.md.
"""

from __future__ import annotations

from typing import Any

import orjson

from sidegate.errors import Api
from sidegate.sse import SseParser, encode_event
from sidegate.translate.base import ProviderRequest, TranslateOptions, Usage
from sidegate.translate.common import (
    MALFORMED_EVENT,
    STREAM_TRUNCATED,
    as_dict,
    as_list,
    as_str,
    bad_param,
    bad_response,
    client_error,
    dumps,
    is_int,
    is_number,
    loads_object,
    need_str,
    sse_error_event,
)
from sidegate.translate.openai_shapes import openai_messages, openai_tool_choice, openai_tools
from sidegate.translate.usage import anthropic_usage, parse_openai_usage

__all__ = ["AnthropicOpenAI", "AnthropicOpenAIStream"]

_MAPPED = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "metadata",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "thinking",
        "output_config",
        "cache_control",
    }
)
_NOOP_VALUES: dict[str, tuple[Any, ...]] = {"service_tier": (None, "auto")}

_FINISH = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

# --------------------------------------------------------------------------------------- request


def _effort(budget: int, budgets: dict[str, int]) -> str:
    """The smallest OpenAI effort whose configured budget covers ``budget`` (else the largest)."""
    ordered = sorted(budgets.items(), key=lambda kv: kv[1])
    for name, value in ordered:
        if budget <= value:
            return name
    return ordered[-1][0]


def build_request(body: dict[str, Any], model: str, opts: TranslateOptions) -> dict[str, Any]:
    for key, value in body.items():
        if key in _MAPPED:
            continue
        allowed = _NOOP_VALUES.get(key)
        if allowed is None or value not in allowed:
            raise bad_param(key, f"Parameter {key!r} is not supported for this model.")
    out: dict[str, Any] = {"model": model, "messages": openai_messages(body)}
    max_tokens = body.get("max_tokens")
    if not is_int(max_tokens) or max_tokens < 1:
        raise bad_param("max_tokens", "max_tokens is required and must be a positive integer.")
    out["max_completion_tokens"] = max_tokens
    for key in ("temperature", "top_p", "top_k"):
        value = body.get(key)
        if value is not None:
            if not (is_int(value) if key == "top_k" else is_number(value)):
                raise bad_param(key, f"{key} must be {'an integer' if key == 'top_k' else 'a number'}.")
            out[key] = value
    stop = body.get("stop_sequences")
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise bad_param("stop_sequences", "stop_sequences must be a list of strings.")
    if stop:
        out["stop"] = list(stop)

    tools = body.get("tools")
    choice = body.get("tool_choice")
    if tools:
        out["tools"] = openai_tools(tools)
        if choice is not None:
            out["tool_choice"] = openai_tool_choice(choice)
            if choice.get("disable_parallel_tool_use"):
                out["parallel_tool_calls"] = False
    elif choice is not None:
        if not isinstance(choice, dict):
            raise bad_param("tool_choice", "tool_choice must be an object.")
        if choice.get("type") not in ("auto", "none"):
            raise bad_param("tool_choice", "tool_choice requires tools.")

    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        if not opts.reasoning_budgets:
            raise bad_param("thinking", "thinking is not enabled on this route.")
        budget = thinking.get("budget_tokens") or 0
        if not is_int(budget):
            raise bad_param("thinking", "thinking.budget_tokens must be an integer.")
        out["reasoning_effort"] = _effort(budget, opts.reasoning_budgets)
    elif thinking is not None and (
        not isinstance(thinking, dict) or thinking.get("type") not in ("disabled", "adaptive")
    ):
        raise bad_param("thinking", "thinking must be enabled, adaptive or disabled.")

    output_config = body.get("output_config") or {}
    if not isinstance(output_config, dict):
        raise bad_param("output_config", "output_config must be an object.")
    if output_config.get("effort"):
        out["reasoning_effort"] = need_str(output_config["effort"], "output_config", "output_config.effort")
    fmt = output_config.get("format")
    if fmt:
        if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
            raise bad_param("output_config", "output_config.format must be a json_schema with a schema.")
        out["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": fmt["schema"], "strict": True},
        }

    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise bad_param("metadata", "metadata must be an object.")
    user = metadata.get("user_id")
    if user:
        out["user"] = need_str(user, "metadata", "metadata.user_id")
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


# -------------------------------------------------------------------------------------- response


def _tool_input(arguments: Any) -> dict[str, Any]:
    arguments = as_str(arguments)
    try:
        parsed = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"_raw_arguments": arguments}


def _stop(choice: dict[str, Any]) -> tuple[str, str | None]:
    finish = choice.get("finish_reason")
    matched = choice.get("stop_reason")  # vLLM: the stop string that matched, if any
    if finish == "stop" and isinstance(matched, str):
        return "stop_sequence", matched
    return (_FINISH.get(finish, "end_turn") if isinstance(finish, str) else "end_turn"), None


def build_response(body: dict[str, Any]) -> tuple[dict[str, Any], Usage]:
    choices = as_list(body.get("choices"))
    choice = as_dict(choices[0]) if choices else {}
    msg = as_dict(choice.get("message"))
    content: list[dict[str, Any]] = []
    reasoning = msg.get("reasoning_content") or msg.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = msg.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    refusal = msg.get("refusal")
    if isinstance(refusal, str) and refusal:
        content.append({"type": "text", "text": refusal})
    for call in as_list(msg.get("tool_calls")):
        call = as_dict(call)
        fn = as_dict(call.get("function"))
        content.append(
            {
                "type": "tool_use",
                "id": as_str(call.get("id")),
                "name": as_str(fn.get("name")),
                "input": _tool_input(fn.get("arguments")),
            }
        )
    stop_reason, stop_sequence = _stop(choice)
    usage = parse_openai_usage(body.get("usage")) or Usage()
    out = {
        "id": as_str(body.get("id")),
        "type": "message",
        "role": "assistant",
        "model": as_str(body.get("model")),
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": anthropic_usage(usage),
    }
    return out, usage


# ------------------------------------------------------------------------------------- streaming

_TEXT, _THINKING, _TOOL = 1, 2, 3


class AnthropicOpenAIStream:
    """The provider's OpenAI ``chat.completion.chunk`` SSE -> the client's Anthropic Messages SSE events."""

    __slots__ = (
        "_cur_index",
        "_cur_kind",
        "_done",
        "_next_index",
        "_parser",
        "_started",
        "_stop",
        "_tools",
        "usage",
    )

    def __init__(self) -> None:
        self._parser = SseParser()
        self._started = False
        self._done = False
        self._next_index = 0  # next Anthropic content block index
        self._cur_kind = 0  # kind of the open block (0: none)
        self._cur_index = -1
        self._tools: dict[int, int] = {}  # OpenAI tool call index -> Anthropic block index
        self._stop: tuple[str, str | None] | None = None
        self.usage: Usage | None = None

    # -- event builders
    def _start(self, chunk: dict[str, Any]) -> bytes:
        self._started = True
        msg = {
            "id": as_str(chunk.get("id")),
            "type": "message",
            "role": "assistant",
            "model": as_str(chunk.get("model")),
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
        return (
            b'event: content_block_stop\ndata: {"type":"content_block_stop","index":'
            + str(self._cur_index).encode()
            + b"}\n\n"
        )

    def _open(self, kind: int, block: dict[str, Any]) -> bytes:
        out = self._close()
        self._cur_kind = kind
        self._cur_index = self._next_index
        self._next_index += 1
        ev = {"type": "content_block_start", "index": self._cur_index, "content_block": block}
        return out + encode_event("content_block_start", dumps(ev))

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return encode_event(
            "content_block_delta", dumps({"type": "content_block_delta", "index": index, "delta": delta})
        )

    def _finalize(self) -> bytes:
        self._done = True
        out = b"" if self._started else self._start({})
        out += self._close()
        reason, seq = self._stop or ("end_turn", None)
        usage = self.usage or Usage()
        ev = {
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": seq},
            "usage": anthropic_usage(usage),
        }
        return (
            out
            + encode_event("message_delta", dumps(ev))
            + b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
        )

    # -- protocol
    @property
    def done(self) -> bool:
        """The terminal event (the provider's, or an error event) has been emitted."""
        return self._done

    def feed(self, chunk: bytes) -> bytes:
        if self._done:
            return b""
        out: list[bytes] = []
        for ev in self._parser.feed(chunk):
            data = ev.data
            if data == b"[DONE]":
                out.append(self._finalize())
                break
            if not data.strip():
                continue  # an empty keep-alive event
            try:
                obj = orjson.loads(data)
            except orjson.JSONDecodeError:
                obj = None
            if not isinstance(obj, dict):  # never end a stream normally over a dropped event
                self._done = True
                out.append(sse_error_event(Api.ANTHROPIC, MALFORMED_EVENT, "api_error"))
                break
            if obj.get("error"):
                self._done = True
                err = obj["error"]
                msg = as_str(err.get("message")) if isinstance(err, dict) else str(err)
                out.append(
                    sse_error_event(Api.ANTHROPIC, msg or "The upstream provider failed.", "api_error")
                )
                break
            out.append(self._chunk(obj))
        return b"".join(out)

    def _chunk(self, obj: dict[str, Any]) -> bytes:
        out = b"" if self._started else self._start(obj)
        if isinstance(obj.get("usage"), dict):
            self.usage = parse_openai_usage(obj["usage"])
        for choice in as_list(obj.get("choices")):
            choice = as_dict(choice)
            if choice.get("index", 0) != 0:
                continue
            delta = as_dict(choice.get("delta"))
            reasoning = as_str(delta.get("reasoning_content")) or as_str(delta.get("reasoning"))
            if reasoning:
                if self._cur_kind != _THINKING:
                    out += self._open(_THINKING, {"type": "thinking", "thinking": "", "signature": ""})
                out += self._delta(self._cur_index, {"type": "thinking_delta", "thinking": reasoning})
            text = as_str(delta.get("content"))
            if text:
                if self._cur_kind != _TEXT:
                    out += self._open(_TEXT, {"type": "text", "text": ""})
                out += self._delta(self._cur_index, {"type": "text_delta", "text": text})
            for call in as_list(delta.get("tool_calls")):
                if isinstance(call, dict):
                    out += self._tool_delta(call)
            if choice.get("finish_reason"):
                self._stop = _stop(choice)
        return out

    def _tool_delta(self, call: dict[str, Any]) -> bytes:
        out = b""
        oi = call.get("index", 0)
        if not is_int(oi):
            return b""
        fn = as_dict(call.get("function"))
        block = self._tools.get(oi)
        if block is None:
            out = self._open(
                _TOOL,
                {
                    "type": "tool_use",
                    "id": as_str(call.get("id")) or f"call_{oi}",
                    "name": as_str(fn.get("name")),
                    "input": {},
                },
            )
            block = self._tools[oi] = self._cur_index
        args = as_str(fn.get("arguments"))
        if args:
            # A late delta for an earlier (closed) tool call keeps that call's block index.
            out += self._delta(block, {"type": "input_json_delta", "partial_json": args})
        return out

    def finish(self) -> bytes:
        if self._done:
            return b""
        if self._stop is not None:  # finish_reason seen, only [DONE] missing: a complete answer
            return self._finalize()
        self._done = True
        return sse_error_event(Api.ANTHROPIC, STREAM_TRUNCATED, "api_error")


# ------------------------------------------------------------------------------------ translator


class AnthropicOpenAI:
    inbound = Api.ANTHROPIC
    upstream = Api.OPENAI

    def request(self, body: dict[str, Any], *, model: str, opts: TranslateOptions) -> ProviderRequest:
        return ProviderRequest("/v1/chat/completions", dumps(build_request(body, model, opts)), {})

    def response(self, body: bytes) -> tuple[bytes, Usage | None]:
        obj = loads_object(body)
        if obj is None:
            raise bad_response()
        out, usage = build_response(obj)
        return dumps(out), usage

    def stream(self, *, client_wants_usage: bool) -> AnthropicOpenAIStream:
        return AnthropicOpenAIStream()

    def error(self, status: int, body: bytes) -> tuple[int, bytes]:
        return client_error(Api.ANTHROPIC, status, body)
