"""The canonical request / response / stream-event form every API codec decodes into and encodes
from: a cross-API translator is one API's decoder glued to another's encoder, so each API's quirks
are written once, in its codec (docs/translation.md, "Design").

The form carries a little of the clients' shape where a round trip must not change it: ``content``
keeps a plain string as a string (both APIs distinguish "a string" from "a list of one text part"),
a tool call keeps OpenAI's exact argument text, a tool choice says whether it was explicit, and
``Request.extras`` holds the client parameters without a field, by the client's name, with the
client codec's policy for them. A field joins the form as soon as two APIs have it.

The classes use ``__slots__`` (the cheapest Python objects to build and read): a long agent
conversation builds thousands of them per request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sidegate.errors import Api
from sidegate.translate.base import Usage


@dataclass(slots=True)
class Text:
    text: str


@dataclass(slots=True)
class Thinking:
    text: str
    signature: str = ""


@dataclass(slots=True)
class Image:
    """Base64 (``media_type`` + ``data``) or by ``url``."""

    media_type: str = ""
    data: str = ""
    url: str = ""


@dataclass(slots=True)
class Document:
    """A base64 PDF (``data``), or plain text (``text``) that a provider without documents inlines."""

    media_type: str = ""
    data: str = ""
    text: str | None = None
    title: str | None = None


@dataclass(slots=True)
class ToolCall:
    """``input`` is the parsed arguments; ``raw`` keeps OpenAI's exact argument text when known."""

    id: str
    name: str
    input: dict[str, Any]
    raw: str | None = None


@dataclass(slots=True)
class ToolResult:
    call_id: str
    text: str
    is_error: bool = False


Part = Text | Thinking | Image | Document | ToolCall | ToolResult


@dataclass(slots=True)
class Message:
    """role: system, user, assistant (tool results are ``ToolResult`` parts of a user message)."""

    role: str
    content: str | list[Part]


@dataclass(slots=True)
class Tool:
    name: str
    description: str | None
    schema: dict[str, Any]
    strict: bool = False


@dataclass(slots=True)
class ToolChoice:
    """kind: auto, none, any (a tool must be called), tool (``name`` must be called)."""

    kind: str
    name: str | None = None
    explicit: bool = True
    """False when only ``disable_parallel`` made the choice exist (OpenAI sends no tool_choice)."""
    disable_parallel: bool = False


@dataclass(slots=True)
class Request:
    source: Api
    """The client's API: error messages and the refusal policy for ``extras`` name its parameters."""
    messages: list[Message]
    check_extras: Callable[[dict[str, Any]], None]
    """The client codec's policy for ``extras`` sent to another API (raises the 400)."""
    max_tokens: int | None = None
    max_tokens_param: str = "max_tokens"
    stop: list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    response_schema: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    thinking_budget: int | None = None
    user: str | None = None
    stream: bool = False
    extras: dict[str, Any] = field(default_factory=dict)
    """Client parameters the form has no field for, by the client's name: a provider codec of the
    same API forwards them; any other calls ``check_extras`` (harmless, no-op value, or a 400)."""


@dataclass(slots=True)
class Response:
    """stop: end, stop_sequence, length, tool_use, refusal (a small common vocabulary)."""

    id: str
    model: str
    content: list[Part]
    stop: str
    stop_sequence: str | None
    usage: Usage
    thinking_tokens: int | None = None


# ------------------------------------------------------------------------------ stream events


class Start:
    __slots__ = ("id", "model")

    def __init__(self, id: str, model: str) -> None:
        self.id = id
        self.model = model


class TextDelta:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class ThinkingDelta:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class ToolStart:
    """A new tool call; ``index`` counts tool calls (not content blocks), ``arguments`` may be ""."""

    __slots__ = ("arguments", "id", "index", "name")

    def __init__(self, index: int, id: str, name: str, arguments: str) -> None:
        self.index = index
        self.id = id
        self.name = name
        self.arguments = arguments


class ToolDelta:
    __slots__ = ("arguments", "index")

    def __init__(self, index: int, arguments: str) -> None:
        self.index = index
        self.arguments = arguments


class UsageUpdate:
    """The full usage so far (providers report cumulative counters)."""

    __slots__ = ("thinking_tokens", "usage")

    def __init__(self, usage: Usage, thinking_tokens: int | None) -> None:
        self.usage = usage
        self.thinking_tokens = thinking_tokens


class Stop:
    __slots__ = ("reason", "sequence")

    def __init__(self, reason: str, sequence: str | None) -> None:
        self.reason = reason
        self.sequence = sequence


class End:
    """The provider's terminal event: the client's terminal event(s) follow."""

    __slots__ = ()


class Failure:
    """A terminal error; kind: server, rate_limit, invalid_request."""

    __slots__ = ("kind", "message")

    def __init__(self, message: str, kind: str = "server") -> None:
        self.message = message
        self.kind = kind


END = End()
Event = Start | TextDelta | ThinkingDelta | ToolStart | ToolDelta | UsageUpdate | Stop | End | Failure
