"""OpenAI Chat Completions client -> Anthropic Messages provider.

Mapping decisions are tabulated in docs/translation.md. In short: every OpenAI parameter is either
mapped, known to be harmless (ignored), or refused with a 400 naming it; nothing is dropped silently.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from sidegate.errors import Api
from sidegate.sse import SseParser
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

__all__ = ["OpenAIToAnthropic"]

# Parameters that do not change what the model generates: accepted and not forwarded.
_HARMLESS = frozenset(
    {
        "model",
        "messages",
        "store",
        "metadata",
        "stream_options",
        "prompt_cache_key",
        "prompt_cache_retention",
        "prompt_cache_options",
    }
)
# Parameters refused unless they hold their no-op value.
_NOOP_VALUES: dict[str, tuple[Any, ...]] = {
    "n": (None, 1),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "logit_bias": (None, {}),
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "seed": (None,),
    "audio": (None,),
    "modalities": (None, ["text"]),
    "prediction": (None,),
    "web_search_options": (None,),
    "moderation": (None,),
    "verbosity": (None, "medium"),
    "service_tier": (None, "auto", "default"),
    "functions": (None, []),
    "function_call": (None,),
}
_MAPPED = frozenset(
    {
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "reasoning_effort",
        "user",
        "safety_identifier",
        "stream",
    }
)
# anthropic-version from which temperature/top_p/top_k are rejected by the provider.
_NO_SAMPLING_VERSION = "2026-10-21"

_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

_USAGE_KEYS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")

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


def _text_of(content: Any, where: str) -> str:
    """Text of a system/developer/tool content (string or text parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise bad_param("messages", f"{where} content part type {kind!r} is not supported upstream.")
            parts.append(need_str(part.get("text", ""), "messages", f"{where} text"))
        return "".join(parts)
    if content is None:
        return ""
    raise bad_param("messages", f"{where} content must be a string or a list of text parts.")


def _data_url(url: str, where: str) -> tuple[str, str]:
    """(media_type, base64 data) of a ``data:<type>;base64,<data>`` URL."""
    head, sep, data = url.partition(",")
    if not sep or not head.endswith(";base64"):
        raise bad_param("messages", f"{where}: only base64 data URLs are supported.")
    return head[5:-7].lower(), data


def _image_block(part: dict[str, Any]) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise bad_param("messages", "image_url part without a url.")
    if url.startswith("data:"):
        media_type, data = _data_url(url, "image_url")
        if media_type not in _IMAGE_TYPES:
            raise bad_param("messages", f"image type {media_type!r} is not supported (jpeg, png, gif, webp).")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise bad_param("messages", "image_url must be an https URL or a base64 data URL.")


def _file_block(part: dict[str, Any]) -> dict[str, Any]:
    file = part.get("file")
    data_url = file.get("file_data") if isinstance(file, dict) else None
    if not isinstance(data_url, str):
        raise bad_param("messages", "file parts must carry file_data (file_id cannot be resolved upstream).")
    if not data_url.startswith("data:"):  # OpenAI also accepts bare base64: assume PDF as it does
        data_url = "data:application/pdf;base64," + data_url
    media_type, data = _data_url(data_url, "file")
    if media_type != "application/pdf":
        raise bad_param("messages", f"file type {media_type!r} is not supported upstream (PDF only).")
    return {"type": "document", "source": {"type": "base64", "media_type": media_type, "data": data}}


def _user_blocks(content: Any) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_param("messages", "user content must be a string or a list of content parts.")
    blocks: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            blocks.append({"type": "text", "text": need_str(part.get("text", ""), "messages", "text")})
        elif kind == "image_url":
            blocks.append(_image_block(part))
        elif kind == "file":
            blocks.append(_file_block(part))
        else:
            raise bad_param("messages", f"user content part type {kind!r} is not supported upstream.")
    return blocks


def _assistant_blocks(msg: dict[str, Any]) -> list[dict[str, Any]]:
    if msg.get("audio") is not None:
        raise bad_param("messages", "assistant audio cannot be sent upstream.")
    if msg.get("function_call") is not None:
        raise bad_param("messages", "assistant function_call is deprecated; use tool_calls.")
    blocks: list[dict[str, Any]] = []
    content = msg.get("content")
    if isinstance(content, str):
        if content:
            blocks.append({"type": "text", "text": content})
    elif isinstance(content, list):
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                blocks.append({"type": "text", "text": need_str(part.get("text", ""), "messages", "text")})
            elif kind == "refusal":
                refusal = need_str(part.get("refusal", ""), "messages", "refusal")
                blocks.append({"type": "text", "text": refusal})
            else:
                raise bad_param(
                    "messages", f"assistant content part type {kind!r} is not supported upstream."
                )
    elif content is not None:
        raise bad_param("messages", "assistant content must be a string or a list of parts.")
    calls = msg.get("tool_calls") or []
    if not isinstance(calls, list):
        raise bad_param("messages", "assistant tool_calls must be a list.")
    for call in calls:
        if not isinstance(call, dict):
            raise bad_param("messages", "each assistant tool call must be an object.")
        if call.get("type", "function") != "function":
            raise bad_param("messages", f"tool call type {call.get('type')!r} is not supported upstream.")
        fn = call.get("function") or {}
        if not isinstance(fn, dict):
            raise bad_param("messages", "tool call function must be an object.")
        call_id = need_str(call.get("id", ""), "messages", "tool call id")
        name = need_str(fn.get("name", ""), "messages", "tool call function name")
        args = fn.get("arguments") or "{}"
        try:
            parsed = orjson.loads(args)
        except orjson.JSONDecodeError:
            raise bad_param(
                "messages", f"tool call {call.get('id')!r} arguments are not valid JSON."
            ) from None
        if not isinstance(parsed, dict):
            raise bad_param("messages", f"tool call {call.get('id')!r} arguments must be a JSON object.")
        blocks.append({"type": "tool_use", "id": call_id, "name": name, "input": parsed})
    return blocks


def _tool_result(msg: dict[str, Any]) -> dict[str, Any]:
    call_id = msg.get("tool_call_id")
    if not isinstance(call_id, str):
        raise bad_param("messages", "tool message without tool_call_id.")
    return {"type": "tool_result", "tool_use_id": call_id, "content": _text_of(msg.get("content"), "tool")}


def _messages(messages: Any) -> tuple[list[str], list[dict[str, Any]]]:
    """(system texts, Anthropic messages) with adjacent same-role turns merged."""
    if not isinstance(messages, list) or not messages:
        raise bad_param("messages", "messages must be a non-empty list.")
    system: list[str] = []
    out: list[dict[str, Any]] = []

    def push(role: str, content: str | list[dict[str, Any]]) -> None:
        if out and out[-1]["role"] == role:
            prev = out[-1]["content"]
            if isinstance(prev, str):
                prev = [{"type": "text", "text": prev}]
            add = [{"type": "text", "text": content}] if isinstance(content, str) else content
            out[-1]["content"] = prev + add
        else:
            out.append({"role": role, "content": content})

    for msg in messages:
        if not isinstance(msg, dict):
            raise bad_param("messages", "each message must be an object.")
        role = msg.get("role")
        if role in ("system", "developer"):
            system.append(_text_of(msg.get("content"), role))
        elif role == "user":
            push("user", _user_blocks(msg.get("content")))
        elif role == "assistant":
            blocks = _assistant_blocks(msg)
            if blocks:
                push("assistant", blocks)
        elif role == "tool":
            push("user", [_tool_result(msg)])
        else:
            raise bad_param("messages", f"message role {role!r} is not supported upstream.")
    return system, out


def _schema(schema: Any) -> dict[str, Any]:
    """Function ``parameters`` -> Anthropic ``input_schema`` (an object schema, as both APIs require)."""
    if schema is None or schema == {}:
        return {"type": "object", "properties": {}}
    if not isinstance(schema, dict) or schema.get("type", "object") != "object":
        raise bad_param("tools", "function parameters must be a JSON Schema of type 'object'.")
    return schema if "type" in schema else {"type": "object", **schema}


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise bad_param("tools", "tools must be a list.")
    out = []
    for tool in tools:
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise bad_param("tools", f"tool type {kind!r} is not supported upstream (function tools only).")
        fn = tool.get("function") or {}
        if not isinstance(fn, dict):
            raise bad_param("tools", "tool function must be an object.")
        entry: dict[str, Any] = {"name": need_str(fn.get("name", ""), "tools", "function name")}
        if fn.get("description"):
            entry["description"] = need_str(fn["description"], "tools", "function description")
        entry["input_schema"] = _schema(fn.get("parameters"))
        if fn.get("strict"):
            entry["strict"] = True
        out.append(entry)
    return out


def _tool_choice(choice: Any) -> dict[str, Any]:
    if choice == "auto":
        return {"type": "auto"}
    if choice == "none":
        return {"type": "none"}
    if choice == "required":
        return {"type": "any"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = as_dict(choice.get("function")).get("name")
        if isinstance(name, str):
            return {"type": "tool", "name": name}
    raise bad_param("tool_choice", f"tool_choice {choice!r} is not supported upstream.")


def _response_format(fmt: Any) -> dict[str, Any] | None:
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_schema":
        schema = as_dict(fmt.get("json_schema")).get("schema")
        if not isinstance(schema, dict):
            raise bad_param("response_format", "response_format json_schema needs a schema object.")
        return {"format": {"type": "json_schema", "schema": schema}}
    if kind == "json_object":
        raise bad_param(
            "response_format",
            "response_format json_object has no upstream equivalent; use json_schema with a schema.",
        )
    raise bad_param("response_format", f"response_format type {kind!r} is not supported upstream.")


def _check_params(body: dict[str, Any]) -> None:
    for key, value in body.items():
        if key in _MAPPED or key in _HARMLESS:
            continue
        allowed = _NOOP_VALUES.get(key)
        if allowed is None:
            raise bad_param(key, f"Parameter {key!r} is not supported for this model.")
        if value not in allowed:
            raise bad_param(
                key, f"Parameter {key!r} is not supported for this model (only its default value is)."
            )


def build_request(body: dict[str, Any], model: str, opts: TranslateOptions) -> dict[str, Any]:
    """OpenAI chat request body -> Anthropic Messages request body."""
    _check_params(body)
    system, messages = _messages(body.get("messages"))
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
        out["tools"] = _tools(tools)
        choice = body.get("tool_choice")
        tc = _tool_choice(choice) if choice is not None else {"type": "auto"}
        if body.get("parallel_tool_calls") is False and tc["type"] != "none":
            tc["disable_parallel_tool_use"] = True
        if choice is not None or "disable_parallel_tool_use" in tc:
            out["tool_choice"] = tc
    elif body.get("tool_choice") not in (None, "none", "auto"):
        raise bad_param("tool_choice", "tool_choice requires tools.")

    fmt = body.get("response_format")
    if fmt is not None:
        output_config = _response_format(fmt)
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


def _usage(u: dict[str, Any]) -> Usage:
    read = as_count(u.get("cache_read_input_tokens"))
    created = as_count(u.get("cache_creation_input_tokens"))
    return Usage(
        input_tokens=as_count(u.get("input_tokens")) + read + created,
        output_tokens=as_count(u.get("output_tokens")),
        cached_tokens=read,
        cache_creation_tokens=created,
    )


def openai_usage(usage: Usage, thinking_tokens: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }
    if thinking_tokens is not None:
        out["completion_tokens_details"] = {"reasoning_tokens": thinking_tokens}
    return out


def _thinking_tokens(u: dict[str, Any]) -> int | None:
    details = u.get("output_tokens_details")
    if not isinstance(details, dict) or details.get("thinking_tokens") is None:
        return None
    return as_count(details["thinking_tokens"])


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
    usage = _usage(raw_usage)
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
        "usage": openai_usage(usage, _thinking_tokens(raw_usage)),
    }
    return out, usage


# ------------------------------------------------------------------------------------- streaming


class AnthropicToOpenAIStream:
    """Anthropic Messages SSE -> OpenAI ``chat.completion.chunk`` SSE."""

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
        for key in _USAGE_KEYS:
            value = u.get(key)
            if value is not None:
                raw[key] = as_count(value)
        self.usage = _usage(raw)

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
            if _thinking_tokens(u) is not None:
                self._thinking_tokens = _thinking_tokens(u)
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


class OpenAIToAnthropic:
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

    def stream(self, *, client_wants_usage: bool) -> AnthropicToOpenAIStream:
        return AnthropicToOpenAIStream(client_wants_usage=client_wants_usage, created=self.clock())

    def error(self, status: int, body: bytes) -> tuple[int, bytes]:
        return client_error(Api.OPENAI, status, body)
