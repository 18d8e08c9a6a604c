"""What the fakes refuse: a request body the official SDKs' request types do not accept.

A real provider refuses a malformed request with a 400; a fake that answered it anyway would hide a
gateway that forwards (or translates into) something the provider never takes. The types are the
installed `openai` / `anthropic` SDKs' TypedDicts (the authoritative wire shapes), validated with
pydantic `TypeAdapter`s built once per process. Unknown top-level parameters are refused, as the real
APIs refuse them; unknown keys deeper down pass (TypedDicts ignore them, and so do the providers for
most objects). Without the SDKs installed (a production install runs the demo fakes without the test
extras) only the few checks of `routes.validate` apply.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from typing import Any

from sidegate.fakes.unions import TaggedItems

__all__ = ["sdk_problem", "warm_up"]

# Parameters the SDK types lack but the real endpoint takes (Azure's chat "On Your Data").
_EXTRA_KNOWN = {"azure_chat": frozenset({"data_sources"})}
_ANTHROPIC = frozenset({"messages", "count_tokens"})
# Anthropic's sampling parameters, refused from anthropic-version 2026-10-21 on (the SDK's version).
_SAMPLING = {"temperature": (0.0, 1.0), "top_p": (0.0, 1.0), "top_k": (0, None)}
_NO_SAMPLING_VERSION = "2026-10-21"
_OLDEST_VERSION = "2023-06-01"
# Keys of the SDK's params that the SDK sends as headers (`betas` -> `anthropic-beta`), never in the body.
_HEADERS = frozenset({"betas"})


@dataclass(frozen=True)
class _Check:
    batch: Any  # TypeAdapter for the non-streaming params
    streaming: Any  # TypeAdapter for the streaming params
    known: frozenset[str]  # top-level parameter names
    # Top-level lists of a big union, validated item by item against the item's own candidates.
    lists: dict[str, TaggedItems] = field(default_factory=dict)
    # Lax (and the lazy iterables left undrained) where a strict union picks the wrong member
    # (embeddings' `input`: a list of strings is no `SequenceNotStr[str]` to strict mode).
    strict: bool = True


@functools.cache
def _checks() -> dict[str, _Check]:
    try:
        from anthropic.types import message_count_tokens_params as count_tokens
        from anthropic.types.beta import message_create_params as messages
        from anthropic.types.beta.beta_message_param import BetaMessageParam
        from anthropic.types.beta.beta_tool_union_param import BetaToolUnionParam
        from openai.types import embedding_create_params as embeddings
        from openai.types.chat import completion_create_params as chat
        from openai.types.chat.chat_completion_message_param import ChatCompletionMessageParam
        from openai.types.responses import response_create_params as responses
        from openai.types.responses.response_input_item_param import ResponseInputItemParam
        from openai.types.responses.tool_param import ToolParam
        from pydantic import TypeAdapter
    except ImportError:  # the SDKs are test extras
        return {}

    def check(batch: Any, streaming: Any) -> _Check:
        known = (frozenset(batch.__annotations__) | frozenset(streaming.__annotations__)) - _HEADERS
        return _Check(TypeAdapter(batch), TypeAdapter(streaming), known)

    chat_check = replace(
        check(chat.CompletionCreateParamsNonStreaming, chat.CompletionCreateParamsStreaming),
        lists={"messages": TaggedItems(ChatCompletionMessageParam, key="role")},
    )
    return {
        # Neither streams: one type serves both slots.
        "embeddings": replace(check(embeddings.EmbeddingCreateParams, embeddings.EmbeddingCreateParams), strict=False),
        "count_tokens": replace(
            check(count_tokens.MessageCountTokensParams, count_tokens.MessageCountTokensParams), strict=False
        ),
        "chat": chat_check,
        "azure_chat": chat_check,
        "responses": replace(
            check(responses.ResponseCreateParamsNonStreaming, responses.ResponseCreateParamsStreaming),
            lists={"input": TaggedItems(ResponseInputItemParam), "tools": TaggedItems(ToolParam)},
        ),
        # The beta types: a superset of the GA ones (context_management, mcp_servers...), which
        # today's Anthropic SDK and coding agents send with an `anthropic-beta` header.
        "messages": replace(
            check(messages.MessageCreateParamsNonStreaming, messages.MessageCreateParamsStreaming),
            lists={
                "messages": TaggedItems(BetaMessageParam, key="role"),
                "tools": TaggedItems(BetaToolUnionParam),
            },
        ),
    }


def warm_up() -> None:
    """Import the SDK types and build the validators now rather than on the first request."""
    _checks()


def sdk_problem(
    endpoint: str, body: dict[str, Any], anthropic_version: str | None = None
) -> str | dict[str, Any] | None:
    """The 400 error (message, or OpenAI error fields) the real API gives `body`, or None if it is fine.

    `anthropic_version` is the request's header: before 2026-10-21 Messages still take the sampling
    parameters (temperature, top_p, top_k) that the SDK's types, written for the newer version, lack."""
    check = _checks().get(endpoint)
    if check is None:
        return None
    anthropic = endpoint in _ANTHROPIC
    sampling = anthropic and (anthropic_version or _OLDEST_VERSION) < _NO_SAMPLING_VERSION
    for key in body:
        if key not in check.known and key not in _EXTRA_KNOWN.get(endpoint, ()):
            if sampling and key in _SAMPLING:
                problem = _sampling_problem(key, body[key])
                if problem:
                    return problem
                continue
            return _unknown(endpoint, key)
    problem = None if endpoint in _ANTHROPIC else _openai_rules(endpoint, body)
    if problem:
        return problem
    body = _with_api_defaults(endpoint, body)
    # The big lists' items on their own (see unions.py), the rest with an empty list in their place.
    whole, items = body, []
    for key, tagged in check.lists.items():
        value = body.get(key)
        if isinstance(value, list):
            whole = {**whole, key: []}
            items.extend(((key, i), tagged.adapter_for(item), item) for i, item in enumerate(value))
    adapter = check.streaming if body.get("stream") is True else check.batch
    problem = _validate(adapter, whole, (), anthropic, check.strict)
    for at, item_adapter, item in items:
        if problem:
            break
        problem = _validate(item_adapter, item, at, anthropic, check.strict)
    return problem


def _validate(
    adapter: Any, value: Any, at: tuple[Any, ...], anthropic: bool, strict: bool = True
) -> str | dict[str, Any] | None:
    from pydantic import ValidationError

    try:
        validated = adapter.validate_python(value, strict=strict)
        if strict:  # lax unions may have picked a lazy Iterable member that the value's items do not fit
            _drain(validated, at)
    except ValidationError as e:
        return _describe(e, at, anthropic)
    except _LateError as late:
        return _describe(late.error, late.prefix, anthropic)
    return None


class _LateError(Exception):
    """A validation error raised while draining the iterable at `prefix` (its locations are relative)."""

    def __init__(self, prefix: tuple[Any, ...], error: Any) -> None:
        super().__init__()
        self.prefix, self.error = prefix, error


def _sampling_problem(key: str, value: Any) -> str | None:
    """Anthropic's own words for a sampling parameter of the wrong type or out of range."""
    low, high = _SAMPLING[key]
    if key == "top_k":
        if not isinstance(value, int) or isinstance(value, bool):
            return f"{key}: Input should be a valid integer"
    elif not isinstance(value, int | float) or isinstance(value, bool):
        return f"{key}: Input should be a valid number"
    if value < low:
        return f"{key}: Input should be greater than or equal to {low:g}"
    if high is not None and value > high:
        return f"{key}: Input should be less than or equal to {high:g}"
    return None


def _with_api_defaults(endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    """`body` with what the Responses API defaults but the SDK's types require filled in, as clients
    commonly leave it out and the API takes that: a function tool's `strict` and `parameters`, and
    an assistant message passed back without its `id`, `status` and `output_text` annotations (what
    Codex and other stateless clients send)."""
    if endpoint != "responses":
        return body
    out = body
    tools = body.get("tools")
    if isinstance(tools, list) and any(_bare_function(t) for t in tools):
        out = {
            **out,
            "tools": [{"strict": None, "parameters": None, **t} if _bare_function(t) else t for t in tools],
        }
    items = body.get("input")
    if isinstance(items, list) and any(_bare_output_message(i) for i in items):
        out = {**out, "input": [_as_output_message(i) if _bare_output_message(i) else i for i in items]}
    return out


def _bare_function(tool: Any) -> bool:
    return (
        isinstance(tool, dict)
        and tool.get("type") == "function"
        and not ("strict" in tool and "parameters" in tool)
    )


def _bare_output_message(item: Any) -> bool:
    if not isinstance(item, dict) or item.get("role") != "assistant" or "id" in item:
        return False
    content = item.get("content")
    return isinstance(content, list) and any(
        isinstance(p, dict) and p.get("type") in ("output_text", "refusal") for p in content
    )


def _as_output_message(item: dict[str, Any]) -> dict[str, Any]:
    parts = [
        {"annotations": [], **p} if isinstance(p, dict) and p.get("type") == "output_text" else p
        for p in item["content"]
    ]
    return {"type": "message", "id": "msg_unset", "status": "completed", **item, "content": parts}


def _unknown(endpoint: str, key: str) -> str | dict[str, Any]:
    if endpoint in _ANTHROPIC:
        return f"{key}: Extra inputs are not permitted"
    if endpoint == "responses":
        return {"message": f"Unknown parameter: '{key}'.", "param": key, "code": "unknown_parameter"}
    return f"Unrecognized request argument supplied: {key}"


def _openai_rules(endpoint: str, body: dict[str, Any]) -> dict[str, Any] | None:
    """OpenAI's own checks the types cannot say: `stream_options` only with `stream`; for the
    Responses API, `model` required and `max_output_tokens` >= 16."""
    if body.get("stream_options") is not None and body.get("stream") is not True:
        return {
            "message": "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "param": "stream_options",
            "code": None,
        }
    if endpoint != "responses":
        return None
    if "model" not in body:
        return {
            "message": "Missing required parameter: 'model'.",
            "param": "model",
            "code": "missing_required_parameter",
        }
    limit = body.get("max_output_tokens")
    if isinstance(limit, int) and not isinstance(limit, bool) and limit < 16:
        return {
            "message": "Invalid 'max_output_tokens': integer below minimum value. "
            f"Expected a value >= 16, but got {limit} instead.",
            "param": "max_output_tokens",
            "code": "integer_below_min_value",
        }
    return _assistant_parts(body.get("input"))


def _assistant_parts(items: Any) -> dict[str, Any] | None:
    """An assistant turn holds what the model said (`output_text`, `refusal`), never input parts:
    the API refuses what the SDK's `EasyInputMessageParam` lets through."""
    if not isinstance(items, list):
        return None
    for i, item in enumerate(items):
        content = item.get("content") if isinstance(item, dict) and item.get("role") == "assistant" else None
        for j, part in enumerate(content if isinstance(content, list) else []):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in ("output_text", "refusal"):
                return {
                    "message": f"Invalid value: '{kind}'. Supported values are: 'output_text' and 'refusal'.",
                    "param": f"input[{i}].content[{j}]",
                    "code": "invalid_value",
                }
    return None


def _drain(value: Any, path: tuple[Any, ...]) -> None:
    """Consume the lazy iterators pydantic returns for `Iterable[...]` fields, so their items are
    validated too; an item's error is raised as `_LateError` with the iterable's location."""
    from pydantic import ValidationError

    if isinstance(value, dict):
        for k, v in value.items():
            _drain(v, (*path, k))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _drain(v, (*path, i))
    elif not isinstance(value, str | bytes | int | float | bool) and value is not None:
        try:
            items = list(value)
        except TypeError:
            return
        except ValidationError as e:
            raise _LateError(path, e) from None
        for i, v in enumerate(items):
            _drain(v, (*path, i))


def _param(loc: tuple[Any, ...]) -> str:
    """`messages[0].content` from a pydantic location, dropping union member tags (class names,
    `str`, `list[...]`...): the SDKs' wire keys are all snake_case."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and part and (part[0].islower() or part[0] == "_") and "[" not in part:
            if part in ("str", "int", "float", "bool", "list", "dict", "none", "json-or-python"):
                continue
            out += f".{part}" if out else part
    return out


def _describe(e: Any, prefix: tuple[Any, ...], anthropic: bool) -> str | dict[str, Any]:
    errors = e.errors(include_url=False)
    # In a union, the member that got furthest is the one the caller meant.
    first = max(errors, key=lambda err: len(err["loc"]))
    param = _param((*prefix, *first["loc"]))
    if anthropic:
        return f"{param.replace('[', '.').replace(']', '')}: {first['msg']}"
    kind = first["type"]
    if kind == "missing":
        return {
            "message": f"Missing required parameter: '{param}'.",
            "param": param,
            "code": "missing_required_parameter",
        }
    if kind in ("literal_error", "enum"):
        # Every union member's literal at this place: the values the parameter takes.
        allowed: list[str] = []
        for err in errors:
            if err["type"] == kind and _param((*prefix, *err["loc"])) == param:
                expected = str(err.get("ctx", {}).get("expected", ""))
                allowed.extend(
                    v for v in expected.replace(" or ", ", ").split(", ") if v and v not in allowed
                )
        return {
            "message": f"Invalid value: {repr(first['input'])[:80]}. Supported values are: {', '.join(allowed)}.",
            "param": param,
            "code": "invalid_value",
        }
    return {
        "message": f"Invalid type for '{param}': {first['msg'].lower()}.",
        "param": param,
        "code": "invalid_type",
    }
