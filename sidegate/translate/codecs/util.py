"""What several codecs share beyond ``sidegate.translate.common`` (type guards, error shapes) and
``sidegate.translate.usage`` (token usage in every API's words)."""

from __future__ import annotations

from typing import Any

from sidegate.errors import Api
from sidegate.sse import SseParser
from sidegate.translate.base import Usage
from sidegate.translate.codecs.form import Event, Failure
from sidegate.translate.common import (
    MALFORMED_EVENT,
    bad_param,
    is_int,
    is_number,
    loads_object,
    sse_error_event,
)


def check_sampling(body: dict[str, Any], out: dict[str, Any]) -> None:
    """temperature / top_p / top_k: type-checked (a wrong type is the client's 400), copied to ``out``."""
    for key in ("temperature", "top_p", "top_k"):
        value = body.get(key)
        if value is None:
            continue
        if not (is_int(value) if key == "top_k" else is_number(value)):
            raise bad_param(key, f"{key} must be {'an integer' if key == 'top_k' else 'a number'}.")
        out[key] = value


def effort_for_budget(budget: int, budgets: dict[str, int]) -> str:
    """The smallest effort whose configured thinking budget (``TranslateOptions.reasoning_budgets``)
    covers ``budget``, else the largest: the inverse of the effort -> budget mapping, so a round
    trip through both lands on the same effort."""
    ordered = sorted(budgets.items(), key=lambda kv: kv[1])
    for name, value in ordered:
        if budget <= value:
            return name
    return ordered[-1][0]


def stream_error(api: Api, message: str, kind: str) -> bytes:
    """The terminal error event in the client's streaming format; ``kind`` is the form's
    (``server``, ``rate_limit``, ``invalid_request``), named alike by both APIs but for ``server``."""
    return sse_error_event(api, message, None if kind == "server" else kind + "_error")


class JsonEventDecoder:
    """The SSE loop of a provider stream whose every event is one JSON object (Messages, Responses, Gemini):
    blank events skipped, a non-object ends the stream with a failure, and ``_event`` (the API's own
    part) maps each object to form events until it sets ``done``."""

    __slots__ = ("_parser", "done", "usage")

    def __init__(self) -> None:
        self._parser = SseParser()
        self.done = False
        self.usage: Usage | None = None

    def feed(self, chunk: bytes) -> list[Event]:
        out: list[Event] = []
        if self.done:
            return out
        for ev in self._parser.feed(chunk):
            if not ev.data.strip():
                continue
            data = loads_object(ev.data)
            if data is None:
                self.done = True
                out.append(Failure(MALFORMED_EVENT))
                break
            self._event(data, out)
            if self.done:
                break
        return out

    def _event(self, data: dict[str, Any], out: list[Event]) -> None:
        raise NotImplementedError
