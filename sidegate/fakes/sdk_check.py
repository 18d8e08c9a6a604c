"""The fakes check what they receive against the official SDKs' request types (`openai`,
`anthropic`), as the real APIs would refuse it: a missing or mistyped field, and a field the API
does not know (the real APIs refuse unknown parameters: "Unrecognized request argument supplied",
"Extra inputs are not permitted"). Without the SDKs installed (a demo image), nothing is checked."""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["sdk_problem"]


@functools.cache
def _adapters() -> dict[str, tuple[Any, frozenset[str]]]:
    """Route name -> (pydantic adapter of the SDK's params type, the field names it knows)."""
    try:
        from anthropic.types import message_count_tokens_params as count_params
        from openai.types import embedding_create_params as embedding_params
        from pydantic import TypeAdapter
    except ImportError:  # pragma: no cover - the fakes outside the test environment
        return {}
    out: dict[str, tuple[Any, frozenset[str]]] = {}
    for route, params in (("embeddings", embedding_params.EmbeddingCreateParams),
                          ("count_tokens", count_params.MessageCountTokensParams)):  # fmt: skip
        out[route] = (TypeAdapter(params), frozenset(params.__required_keys__ | params.__optional_keys__))
    return out


def sdk_problem(route: str, body: dict[str, Any], anthropic: bool) -> str | None:
    """What the real API would say about `body` on `route` (in its wording), or None."""
    checked = _adapters().get(route)
    if checked is None:
        return None
    adapter, known = checked
    unknown = sorted(set(body) - known)
    if unknown:
        return (
            f"{unknown[0]}: Extra inputs are not permitted"
            if anthropic
            else f"Unrecognized request argument supplied: {unknown[0]}"
        )
    try:
        adapter.validate_python(body)
    except ValueError as exc:  # pydantic's ValidationError
        errors = getattr(exc, "errors", lambda: [])()
        first = errors[0] if errors else {"loc": (), "msg": str(exc)}
        where = ".".join(str(p) for p in first["loc"])
        return f"{where}: {first['msg']}" if anthropic else f"Invalid value for '{where}': {first['msg']}."
    return None
