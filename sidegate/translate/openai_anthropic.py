"""Pair: OpenAI Chat Completions client -> Anthropic Messages provider.

The request, response, error and stream translation of this one pair. Mapping decisions are
tabulated in docs/translation.md. In short: every OpenAI parameter is either mapped, known to be
harmless (ignored), or refused with a 400 naming it; nothing is dropped silently.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sidegate.errors import Api
from sidegate.sse import SseParser
from sidegate.translate.anthropic_shapes import (
    anthropic_messages,
    anthropic_output_config,
    anthropic_tool_choice,
    anthropic_tools,
    check_openai_params,
)
from sidegate.translate.base import ProviderRequest, TranslateOptions, Usage
from sidegate.translate.common import (
    MALFORMED_EVENT,
    STREAM_TRUNCATED,
    as_count,
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
from sidegate.translate.usage import (
    ANTHROPIC_USAGE_KEYS,
    openai_usage,
    parse_anthropic_usage,
    thinking_tokens,
)

__all__ = ["OpenAIAnthropic", "OpenAIAnthropicStream"]

# anthropic-version from which temperature/top_p/top_k are rejected by the provider.
_NO_SAMPLING_VERSION = "2026-10-21"

_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


# --------------------------------------------------------------------------------------- request


def build_request(body: dict[str, Any], model: str, opts: TranslateOptions) -> dict[str, Any]:
    """OpenAI chat request body -> Anthropic Messages request body."""
    check_openai_params(body)
    system, messages = anthropic_messages(body.get("messages"))
    out: dict[str, Any] = {"model": model}

    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    explicit_max = max_tokens is not None
    if explicit_max and (not is_int(max_tokens) or max_tokens < 1):
        raise bad_param("max_completion_tokens", "max_completion_tokens must be a positive integer.")
    if not explicit_max:
        max_tokens = opts.default_max_tokens

    thinking: dict[str, Any] | None = None
    effort = body.get("reasoning_effort")
    if effort is not None and effort != "none":
        need_str(effort, "reasoning_effort", "reasoning_effort")
        budgets = opts.reasoning_budgets
        if not budgets:
            raise bad_param("reasoning_effort", "reasoning_effort is not enabled on this route.")
        budget = budgets.get(effort)
        if budget is None:
            if effort not in ("xhigh", "max"):
                raise bad_param("reasoning_effort", f"reasoning_effort {effort!r} is not supported.")
            budget = max(budgets.values())
        if not explicit_max:
            if max_tokens <= budget:
                max_tokens += budget  # thinking counts toward max_tokens: keep room for the answer
        elif max_tokens <= budget:
            budget = max_tokens // 2
            if budget < 1024:
                raise bad_param(
                    "max_completion_tokens",
                    "max_completion_tokens is too small for reasoning_effort (needs at least 2048).",
                )
        thinking = {"type": "enabled", "budget_tokens": budget}

    out["max_tokens"] = max_tokens
    if system:
        out["system"] = system[0] if len(system) == 1 else [{"type": "text", "text": s} for s in system]
    out["messages"] = messages

    stop = body.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        if stop:
            out["stop_sequences"] = stop
    elif stop is not None:
        raise bad_param("stop", "stop must be a string or a list of strings.")

    new_api = opts.anthropic_version >= _NO_SAMPLING_VERSION
    for key, default in (("temperature", 1), ("top_p", 1), ("top_k", None)):
        value = body.get(key)
        if value is None:
            continue
        if not (is_int(value) if key == "top_k" else is_number(value)):
            raise bad_param(key, f"{key} must be {'an integer' if key == 'top_k' else 'a number'}.")
        if new_api:
            if value == default:
                continue  # the OpenAI default: a no-op, and the provider rejects the key
            raise bad_param(key, f"Parameter {key!r} is not supported by this model's API version.")
        if key == "temperature" and not 0 <= value <= 1:
            raise bad_param(key, "temperature must be between 0 and 1 for this model.")
        out[key] = value

    tools = body.get("tools")
    if tools:
        out["tools"] = anthropic_tools(tools)
        choice = body.get("tool_choice")
        tc = anthropic_tool_choice(choice) if choice is not None else {"type": "auto"}
        if body.get("parallel_tool_calls") is False and tc["type"] != "none":
            tc["disable_parallel_tool_use"] = True
        if choice is not None or "disable_parallel_tool_use" in tc:
            out["tool_choice"] = tc
    elif body.get("tool_choice") not in (None, "none", "auto"):
        raise bad_param("tool_choice", "tool_choice requires tools.")

    fmt = body.get("response_format")
    if fmt is not None:
        output_config = anthropic_output_config(fmt)
        if output_config:
            out["output_config"] = output_config

    if thinking:
        out["thinking"] = thinking
    user = body.get("safety_identifier") or body.get("user")
    if user:
        out["metadata"] = {"user_id": need_str(user, "user", "user")}
    if body.get("stream"):
        out["stream"] = True
    return out


# -------------------------------------------------------------------------------------- response


def build_response(msg: dict[str, Any], created: int) -> tuple[dict[str, Any], Usage]:
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in as_list(msg.get("content")):
        block = as_dict(block)
        kind = block.get("type")
        if kind == "text":
            texts.append(as_str(block.get("text")))
        elif kind == "thinking":
            thoughts.append(as_str(block.get("thinking")))
        elif kind == "tool_use":
            calls.append(
                {
                    "id": as_str(block.get("id")),
                    "type": "function",
                    "function": {
                        "name": as_str(block.get("name")),
                        "arguments": dumps(block.get("input") or {}).decode(),
                    },
                }
            )
        # redacted_thinking and server-tool blocks have no OpenAI form: omitted (documented).
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    if thoughts:
        message["reasoning_content"] = "".join(thoughts)
    raw_usage = as_dict(msg.get("usage"))
    usage = parse_anthropic_usage(raw_usage)
    reason = msg.get("stop_reason")
    out = {
        "id": as_str(msg.get("id")),
        "object": "chat.completion",
        "created": created,
        "model": as_str(msg.get("model")),
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _STOP_REASONS.get(reason, "stop") if isinstance(reason, str) else "stop",
            }
        ],
        "usage": openai_usage(usage, thinking_tokens(raw_usage)),
    }
    return out, usage


# ------------------------------------------------------------------------------------- streaming


class OpenAIAnthropicStream:
    """The provider's Anthropic Messages SSE -> the client's OpenAI ``chat.completion.chunk`` SSE."""

    __slots__ = (
        "_blocks",
        "_created",
        "_done",
        "_ntools",
        "_parser",
        "_prefix",
        "_raw_usage",
        "_thinking_tokens",
        "_wants_usage",
        "usage",
    )

    _SUFFIX = b',"logprobs":null,"finish_reason":null}]}\n\n'

    def __init__(self, *, client_wants_usage: bool, created: int) -> None:
        self._parser = SseParser()
        self._wants_usage = client_wants_usage
        self._created = created
        self._prefix = b""  # 'data: {"id":...,"choices":[{"index":0,"delta":' (set by message_start)
        self._head("", "")
        self._raw_usage: dict[str, int] = {}
        self._blocks: dict[int, int] = {}  # Anthropic tool_use block index -> OpenAI tool call index
        self._ntools = 0
        self._done = False
        self._thinking_tokens: int | None = None
        self.usage: Usage | None = None

    def _add_usage(self, u: dict[str, Any]) -> None:
        """Merge provider counters (message_delta's are cumulative, so later values win)."""
        raw = self._raw_usage
        for key in ANTHROPIC_USAGE_KEYS:
            value = u.get(key)
            if value is not None:
                raw[key] = as_count(value)
        self.usage = parse_anthropic_usage(raw)

    def _head(self, msg_id: str, model: str) -> None:
        head = dumps(
            {"id": msg_id, "object": "chat.completion.chunk", "created": self._created, "model": model}
        )
        self._prefix = b"data: " + head[:-1] + b',"choices":[{"index":0,"delta":'

    def _chunk(self, delta: dict[str, Any]) -> bytes:
        return self._prefix + dumps(delta) + self._SUFFIX

    @property
    def done(self) -> bool:
        """The terminal event (the provider's, or an error event) has been emitted."""
        return self._done

    def feed(self, chunk: bytes) -> bytes:
        if self._done:
            return b""
        out: list[bytes] = []
        for ev in self._parser.feed(chunk):
            if not ev.data.strip():
                continue  # an empty keep-alive event
            data = loads_object(ev.data)
            if data is None:  # never end a stream normally over a dropped event: a terminal error
                self._done = True
                out.append(sse_error_event(Api.OPENAI, MALFORMED_EVENT, "server_error"))
                break
            piece = self._event(data)
            if piece:
                out.append(piece)
            if self._done:
                break
        return b"".join(out)

    def _event(self, data: dict[str, Any]) -> bytes:
        kind = data.get("type")
        if kind == "content_block_delta":
            delta = as_dict(data.get("delta"))
            dkind = delta.get("type")
            if dkind == "text_delta":
                return self._chunk({"content": as_str(delta.get("text"))})
            if dkind == "input_json_delta":
                part = as_str(delta.get("partial_json"))
                index = data.get("index", -1)
                idx = self._blocks.get(index) if is_int(index) else None
                if not part or idx is None:
                    return b""
                return self._chunk({"tool_calls": [{"index": idx, "function": {"arguments": part}}]})
            if dkind == "thinking_delta":
                return self._chunk({"reasoning_content": as_str(delta.get("thinking"))})
            return b""  # signature_delta, citations_delta: no OpenAI form
        if kind == "content_block_start":
            block = as_dict(data.get("content_block"))
            bkind = block.get("type")
            if bkind == "tool_use":
                idx = self._ntools
                self._ntools += 1
                index = data.get("index", -1)
                if is_int(index):
                    self._blocks[index] = idx
                inp = block.get("input")
                call = {
                    "index": idx,
                    "id": as_str(block.get("id")),
                    "type": "function",
                    "function": {
                        "name": as_str(block.get("name")),
                        "arguments": dumps(inp).decode() if inp else "",
                    },
                }
                return self._chunk({"tool_calls": [call]})
            if bkind == "text" and as_str(block.get("text")):
                return self._chunk({"content": block["text"]})
            if bkind == "thinking" and as_str(block.get("thinking")):
                return self._chunk({"reasoning_content": block["thinking"]})
            return b""
        if kind == "message_start":
            msg = as_dict(data.get("message"))
            self._head(as_str(msg.get("id")), as_str(msg.get("model")))
            self._add_usage(as_dict(msg.get("usage")))
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "message_delta":
            u = as_dict(data.get("usage"))
            self._add_usage(u)
            if thinking_tokens(u) is not None:
                self._thinking_tokens = thinking_tokens(u)
            reason = as_dict(data.get("delta")).get("stop_reason")
            if reason is None:
                return b""
            finish = _STOP_REASONS.get(reason, "stop") if isinstance(reason, str) else "stop"
            return self._prefix + b'{},"logprobs":null,"finish_reason":"' + finish.encode() + b'"}]}\n\n'
        if kind == "message_stop":
            self._done = True
            tail = b""
            if self._wants_usage:
                usage = self.usage or Usage()
                tail = (
                    self._prefix[: -len(b'[{"index":0,"delta":')]
                    + b"[],"
                    + b'"usage":'
                    + dumps(openai_usage(usage, self._thinking_tokens))
                    + b"}\n\n"
                )
            return tail + b"data: [DONE]\n\n"
        if kind == "error":
            self._done = True
            err = as_dict(data.get("error"))
            etype = err.get("type")
            otype = "rate_limit_error" if etype == "rate_limit_error" else "server_error"
            if etype == "invalid_request_error":
                otype = "invalid_request_error"
            message = as_str(err.get("message")) or "The upstream provider failed."
            return sse_error_event(Api.OPENAI, message, otype)
        return b""  # ping, content_block_stop, unknown future events

    def finish(self) -> bytes:
        if self._done:
            return b""
        self._done = True
        return sse_error_event(Api.OPENAI, STREAM_TRUNCATED, "server_error")


# ------------------------------------------------------------------------------------ translator


class OpenAIAnthropic:
    inbound = Api.OPENAI
    upstream = Api.ANTHROPIC

    def __init__(self, clock: Callable[[], int] | None = None) -> None:
        """``clock`` gives OpenAI's ``created`` (seconds); injectable so tests are deterministic."""
        self.clock = clock or (lambda: int(time.time()))

    def request(self, body: dict[str, Any], *, model: str, opts: TranslateOptions) -> ProviderRequest:
        out = build_request(body, model, opts)
        return ProviderRequest("/v1/messages", dumps(out), {"anthropic-version": opts.anthropic_version})

    def response(self, body: bytes) -> tuple[bytes, Usage | None]:
        msg = loads_object(body)
        if msg is None:
            raise bad_response()
        out, usage = build_response(msg, self.clock())
        return dumps(out), usage

    def stream(self, *, client_wants_usage: bool) -> OpenAIAnthropicStream:
        return OpenAIAnthropicStream(client_wants_usage=client_wants_usage, created=self.clock())

    def error(self, status: int, body: bytes) -> tuple[int, bytes]:
        return client_error(Api.OPENAI, status, body)
