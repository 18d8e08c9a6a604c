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
from dataclasses import dataclass
from typing import Any

__all__ = ["sdk_problem", "warm_up"]

# Parameters the SDK types lack but the real endpoint takes (Azure's chat "On Your Data").
_EXTRA_KNOWN = {"azure_chat": frozenset({"data_sources"})}
_ANTHROPIC = frozenset({"messages"})


@dataclass(frozen=True)
class _Check:
    batch: Any  # TypeAdapter for the non-streaming params
    streaming: Any  # TypeAdapter for the streaming params
    known: frozenset[str]  # top-level parameter names


@functools.cache
def _checks() -> dict[str, _Check]:
    try:
        from anthropic.types.beta import message_create_params as messages
        from openai.types.chat import completion_create_params as chat
        from openai.types.responses import response_create_params as responses
        from pydantic import TypeAdapter
    except ImportError:  # the SDKs are test extras
        return {}

    def check(batch: Any, streaming: Any) -> _Check:
        known = frozenset(batch.__annotations__) | frozenset(streaming.__annotations__)
        return _Check(TypeAdapter(batch), TypeAdapter(streaming), known)

    chat_check = check(chat.CompletionCreateParamsNonStreaming, chat.CompletionCreateParamsStreaming)
    return {
        "chat": chat_check,
        "azure_chat": chat_check,
        "responses": check(
            responses.ResponseCreateParamsNonStreaming, responses.ResponseCreateParamsStreaming
        ),
        # The beta types: a superset of the GA ones (context_management, mcp_servers...), which
        # today's Anthropic SDK and coding agents send with an `anthropic-beta` header.
        "messages": check(messages.MessageCreateParamsNonStreaming, messages.MessageCreateParamsStreaming),
    }


def warm_up() -> None:
    """Import the SDK types and build the validators now rather than on the first request."""
    _checks()


def sdk_problem(endpoint: str, body: dict[str, Any]) -> str | dict[str, Any] | None:
    """The 400 error (message, or OpenAI error fields) the real API gives `body`, or None if it is fine."""
    check = _checks().get(endpoint)
    if check is None:
        return None
    anthropic = endpoint in _ANTHROPIC
    for key in body:
        if key not in check.known and key not in _EXTRA_KNOWN.get(endpoint, ()):
            return _unknown(endpoint, key)
    if endpoint == "responses":
        problem = _responses_rules(body)
        if problem:
            return problem
    from pydantic import ValidationError

    adapter = check.streaming if body.get("stream") is True else check.batch
    try:
        _drain(adapter.validate_python(body, strict=True), ())
    except ValidationError as e:
        return _describe(e, (), anthropic)
    except _LateError as late:
        return _describe(late.error, late.prefix, anthropic)
    return None


class _LateError(Exception):
    """A validation error raised while draining the iterable at `prefix` (its locations are relative)."""

    def __init__(self, prefix: tuple[Any, ...], error: Any) -> None:
        super().__init__()
        self.prefix, self.error = prefix, error


def _unknown(endpoint: str, key: str) -> str | dict[str, Any]:
    if endpoint in _ANTHROPIC:
        return f"{key}: Extra inputs are not permitted"
    if endpoint == "responses":
        return {"message": f"Unknown parameter: '{key}'.", "param": key, "code": "unknown_parameter"}
    return f"Unrecognized request argument supplied: {key}"


def _responses_rules(body: dict[str, Any]) -> dict[str, Any] | None:
    """The Responses API's own checks the types cannot say: `model` required, `max_output_tokens` >= 16."""
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
