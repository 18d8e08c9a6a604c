"""What several codecs share beyond ``sidegate.translate.common`` (type guards, error shapes) and
``sidegate.translate.usage`` (token usage in every API's words)."""

from __future__ import annotations

from typing import Any

from sidegate.errors import Api
from sidegate.translate.common import bad_param, is_int, is_number, sse_error_event


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
