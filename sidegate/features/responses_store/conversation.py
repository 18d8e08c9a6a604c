"""The kept Responses answers as data: store keys, the stored record, the conversation a
`previous_response_id` expands to, the answer a try collected, and the views `GET` serves.

Pure functions (no I/O), so the rules are tested on their own (tests/unit/test_responses_store*.py).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs

import orjson

from sidegate.errors import GatewayError
from sidegate.sse import SseParser

KEY_PREFIX = "sgr:v1:"
"""Every kept answer's store key starts with it: `sgr:v1:<tenant>:<response id>`."""
MAX_ID_CHARS = 256
"""A longer id names nothing the gateway kept (and never reaches the store as a key)."""
LIST_MAX = 100
LIST_DEFAULT = 20
_TERMINAL = (b'"response.completed"', b'"response.incomplete"')
"""The stream events that carry the whole answer (OpenAI keeps an incomplete answer too)."""
_TERMINAL_NAMES = ("response.completed", "response.incomplete")


def store_key(tenant: str, response_id: str) -> str:
    """The tenant is part of the key: another tenant's id is simply not there (a 404, never a 403
    that would confirm the id exists). Tenant names hold no `:` (config NAME_PATTERN)."""
    return f"{KEY_PREFIX}{tenant}:{response_id}"


def valid_id(response_id: object) -> bool:
    return isinstance(response_id, str) and 0 < len(response_id) <= MAX_ID_CHARS


def as_items(value: Any) -> list[Any]:
    """A request's `input` as a list of items: a string is one user message (OpenAI's own rule)."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if isinstance(value, list):
        return value
    if value is None:
        return []
    raise GatewayError(400, "'input' must be a string or an array of input items.", param="input")


def conversation_so_far(record: dict[str, Any]) -> list[Any]:
    """What the model saw and said up to a kept answer: its input items, then its output items.
    The kept answer's `instructions` are not part of it: as at OpenAI, instructions are not carried
    over by `previous_response_id`, only the new request's apply."""
    response = record.get("response")
    output = response.get("output") if isinstance(response, dict) else None
    return [*record.get("input", []), *(output if isinstance(output, list) else [])]


def not_found(response_id: str, param: str | None = None) -> GatewayError:
    if param == "previous_response_id":
        return GatewayError(404, f"Previous response with id '{response_id}' not found.",
                            code="previous_response_not_found", param=param)  # fmt: skip
    return GatewayError(404, f"Response with id '{response_id}' not found.")


def answer_of(collected: bytes, streamed: bool) -> dict[str, Any] | None:
    """The whole response object of a collected client-format answer: the JSON body, or the data
    of the stream's `response.completed` event (the last event; what the try kept of the stream).
    None when there is no complete answer to keep."""
    try:
        return _answer_of(collected, streamed)
    except orjson.JSONDecodeError:
        return None


def _answer_of(collected: bytes, streamed: bool) -> dict[str, Any] | None:
    if streamed:
        doc = None
        for ev in reversed(SseParser().feed(collected)):  # the terminal event is the last one
            if ev.event in _TERMINAL_NAMES or any(t in ev.data[:256] for t in _TERMINAL):
                doc = ev.data
                break
        if doc is None:
            return None
        event = orjson.loads(doc)
        response = event.get("response") if isinstance(event, dict) else None
    else:
        response = orjson.loads(collected)
    if (
        not isinstance(response, dict)
        or not valid_id(response.get("id"))
        or not isinstance(response.get("output"), list)
    ):
        return None
    return response


def record_of(input_items: list[Any], response: dict[str, Any], previous_id: str | None,
              instructions: Any) -> dict[str, Any]:  # fmt: skip
    """What is kept: the conversation before the answer (the input items, already expanded with
    any earlier turns) and the whole answer (its output items, usage, model, ...). The answer is
    the client's as it received it; `previous_response_id` and `instructions` are the request's
    (a provider that saw the expanded conversation did not see the id)."""
    if previous_id is not None and not response.get("previous_response_id"):
        response["previous_response_id"] = previous_id
    if instructions is not None and response.get("instructions") is None:
        response["instructions"] = instructions
    return {"v": 1, "stored_at": int(time.time()), "input": input_items, "response": response}


def _item_view(item: Any, response_id: str, index: int) -> Any:
    """An input item as OpenAI lists it: with an id (made up from the answer's id and the item's
    place when the client sent none, so cursors are stable), `type`, and content as a list."""
    if not isinstance(item, dict):
        return item
    out = dict(item)
    out.setdefault("id", f"item_{response_id}_{index}")
    if "role" in out and "type" not in out:
        out["type"] = "message"
    content = out.get("content")
    if out.get("type") == "message" and isinstance(content, str):
        kind = "output_text" if out.get("role") == "assistant" else "input_text"
        out["content"] = [{"type": kind, "text": content}]
    return out


def input_items_page(record: dict[str, Any], response_id: str, query: str) -> dict[str, Any]:
    """`GET /v1/responses/{id}/input_items`: OpenAI's list (`limit` 1-100, default 20; `order`
    `desc` by default; `after`: the id of the item the page starts after)."""
    q = {k: v[-1] for k, v in parse_qs(query).items()}
    try:
        limit = int(q.get("limit", LIST_DEFAULT))
    except ValueError:
        raise GatewayError(400, "Invalid 'limit': expected an integer.", param="limit") from None
    if not 1 <= limit <= LIST_MAX:
        raise GatewayError(400, f"Invalid 'limit': must be between 1 and {LIST_MAX}.", param="limit")
    order = q.get("order", "desc")
    if order not in ("asc", "desc"):
        raise GatewayError(400, "Invalid 'order': expected 'asc' or 'desc'.", param="order")
    items = [_item_view(it, response_id, i) for i, it in enumerate(record.get("input", []))]
    if order == "desc":
        items.reverse()
    after = q.get("after")
    if after is not None:
        ids = [it.get("id") if isinstance(it, dict) else None for it in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    page = items[:limit]
    first = page[0].get("id") if page and isinstance(page[0], dict) else None
    last = page[-1].get("id") if page and isinstance(page[-1], dict) else None
    return {
        "object": "list",
        "data": page,
        "first_id": first,
        "last_id": last,
        "has_more": len(items) > limit,
    }


def deleted(response_id: str) -> dict[str, Any]:
    return {"id": response_id, "object": "response", "deleted": True}
