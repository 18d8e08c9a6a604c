"""Shared pieces of the fuzz tests (tests/unit/test_fuzz_*.py): strategies, profiles, checkers.

Example counts are small by default so the whole fuzz set runs in seconds; set
``HYPOTHESIS_PROFILE=thorough`` to multiply every count by :data:`THOROUGH_FACTOR`.
"""

from __future__ import annotations

import os
from typing import Any

import orjson
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from sidegate.core.context import RequestContext
from sidegate.core.intake import CHAT_PATH, MESSAGES_PATH
from sidegate.errors import Api, GatewayError
from sidegate.features.parse import ParseFeature

THOROUGH_FACTOR = 25
settings.register_profile("thorough", deadline=None, max_examples=100 * THOROUGH_FACTOR)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "")
if PROFILE == "thorough":
    settings.load_profile(PROFILE)
_SCALE = THOROUGH_FACTOR if PROFILE == "thorough" else 1


def fuzz(max_examples: int) -> settings:
    """Settings for one fuzz test: a bounded example count (scaled by the thorough profile)."""
    return settings(
        max_examples=max_examples * _SCALE,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


# ------------------------------------------------------------------------------------ JSON values

# orjson encodes ints in [-2**63, 2**64): anything a provider or client can send us as JSON.
_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
_scalars = (
    st.none()
    | st.booleans()
    | _ints
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


class _Gen:
    """Strategy builders for one family: ``junk`` puts wrong types and unsupported values in fields."""

    def __init__(self, junk: bool) -> None:
        self.junk = junk

    def maybe(self, valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        """Mostly the valid shape, sometimes (junk family only) any JSON value."""
        return st.one_of(valid, valid, valid, json_values) if self.junk else valid

    def obj(self, required: dict[str, Any] | None = None, optional: dict[str, Any] | None = None) -> Any:
        """A dict with the given fields, each value possibly of the wrong type."""
        req = {k: self.maybe(v) for k, v in (required or {}).items()}
        opt = {k: self.maybe(v) for k, v in (optional or {}).items()}
        return st.fixed_dictionaries(req, optional=opt)

    def pick(self, good: list[Any], bad: list[Any] = ()) -> st.SearchStrategy[Any]:  # type: ignore[assignment]
        """One of the supported values (or, junk family only, an unsupported one)."""
        return st.sampled_from([*good, *bad] if self.junk else good)


texts = st.text(max_size=16)
_ints_small = st.integers(min_value=1, max_value=40000)
small_ints = st.integers(min_value=-3, max_value=40000) | _ints
_unit = st.floats(min_value=0, max_value=1, allow_nan=False) | st.integers(0, 1)
numbers = st.floats(min_value=-1, max_value=3, allow_nan=False) | st.integers(-2, 3)
_GOOD_URLS = ["https://example.com/a.png", "http://example.com/b.jpg", "data:image/png;base64,iVBORw0KGgo="]
_BAD_URLS = ["data:image/bmp;base64,AAAA", "data:image/png,notbase64", "ftp://example.com/x", ""]
_GOOD_FILES = ["data:application/pdf;base64,JVBERi0=", "JVBERi0="]
_GOOD_SCHEMAS = [{"type": "object", "properties": {"a": {"type": "string"}}}, {}, {"properties": {}}]
_BAD_SCHEMAS = [{"type": "string"}]
arguments = st.sampled_from(['{"a": 1}', "{}", "[1]", "nope", "", "null"]) | texts


def _openai_bodies(g: _Gen) -> st.SearchStrategy[dict[str, Any]]:
    part = st.one_of(
        g.obj({"type": st.just("text"), "text": texts}),
        g.obj(
            {"type": st.just("image_url")},
            {
                "image_url": g.obj(
                    {"url": g.pick(_GOOD_URLS, _BAD_URLS)}, {"detail": st.sampled_from(["auto", "low"])}
                )
            },
        ),
        g.obj({"type": st.just("file")}, {"file": g.obj({}, {"file_data": g.pick(_GOOD_FILES, _BAD_URLS)})}),
        g.obj({"type": g.pick(["refusal"], ["input_audio", "x"])}, {"refusal": texts}),
    )
    content = st.one_of(texts, st.lists(part, max_size=3))
    tool_call = g.obj(
        {"id": texts, "type": st.just("function"), "function": g.obj({"name": texts, "arguments": arguments})}
    )
    message = st.one_of(
        g.obj({"role": g.pick(["system", "developer", "user"], ["function", "x"]), "content": content}),
        g.obj(
            {"role": st.just("assistant")},
            {
                "content": content | st.none(),
                "tool_calls": st.lists(tool_call, max_size=2),
                "refusal": st.none(),
            },
        ),
        g.obj({"role": st.just("tool"), "content": content, "tool_call_id": texts}),
    )
    tool = g.obj(
        {
            "type": st.just("function"),
            "function": g.obj(
                {"name": texts},
                {
                    "description": texts,
                    "parameters": g.pick(_GOOD_SCHEMAS, _BAD_SCHEMAS),
                    "strict": st.booleans(),
                },
            ),
        }
    )
    tool_choice = st.sampled_from(["auto", "none", "required"]) | g.obj(
        {"type": st.just("function"), "function": g.obj({"name": texts})}
    )
    response_format = g.obj(
        {"type": g.pick(["text", "json_schema"], ["json_object"])},
        {"json_schema": g.obj({"name": texts}, {"schema": g.pick(_GOOD_SCHEMAS), "strict": st.booleans()})},
    )
    optional: dict[str, Any] = {
        "stream": st.booleans(),
        "stream_options": g.obj({}, {"include_usage": st.booleans()}),
        "max_tokens": _ints_small,
        "max_completion_tokens": _ints_small,
        "temperature": _unit,
        "top_p": _unit,
        "top_k": st.integers(1, 100),
        "stop": texts | st.lists(texts, max_size=3),
        "tools": st.lists(tool, max_size=2),
        "tool_choice": tool_choice,
        "parallel_tool_calls": st.booleans(),
        "response_format": response_format,
        "reasoning_effort": g.pick(["none", "minimal", "low", "medium", "high", "xhigh"], ["x"]),
        "user": texts,
        "safety_identifier": texts,
        "n": st.just(1),
        "metadata": st.dictionaries(texts, texts, max_size=2),
        "store": st.booleans(),
        "verbosity": st.just("medium"),
    }
    if g.junk:
        optional.update(
            {
                "max_tokens": small_ints,
                "temperature": numbers,
                "n": st.integers(0, 3),
                "frobnicate": st.none(),
            }
        )
    return g.obj(
        {"model": st.sampled_from(["gpt-x", "m"]), "messages": st.lists(message, min_size=1, max_size=4)},
        optional,
    )


def _anthropic_bodies(g: _Gen) -> st.SearchStrategy[dict[str, Any]]:
    source = g.obj(
        {"type": g.pick(["base64", "url", "text"], ["file"])},
        {
            "media_type": st.sampled_from(["image/png", "application/pdf"]),
            "data": texts,
            "url": g.pick(_GOOD_URLS),
        },
    )
    text_block = g.obj({"type": st.just("text"), "text": texts})
    user_block = st.one_of(
        text_block,
        g.obj({"type": st.just("image"), "source": source}),
        g.obj({"type": st.just("document"), "source": source}, {"title": texts}),
        g.obj(
            {"type": st.just("tool_result"), "tool_use_id": texts},
            {"content": texts | st.lists(text_block, max_size=2), "is_error": st.booleans()},
        ),
    )
    assistant_block = st.one_of(
        text_block,
        g.obj(
            {
                "type": st.just("tool_use"),
                "id": texts,
                "name": texts,
                "input": st.dictionaries(texts, texts, max_size=2),
            }
        ),
        g.obj({"type": g.pick(["thinking", "redacted_thinking"], ["server_tool_use"])}, {"thinking": texts}),
    )
    message = st.one_of(
        g.obj(
            {
                "role": g.pick(["user"], ["system", "tool"]),
                "content": texts | st.lists(user_block, max_size=3),
            }
        ),
        g.obj({"role": st.just("assistant"), "content": texts | st.lists(assistant_block, max_size=3)}),
    )
    tool = g.obj(
        {"name": texts},
        {
            "type": g.pick(["custom"], ["web_search_20250305"]),
            "description": texts,
            "input_schema": g.pick(_GOOD_SCHEMAS),
            "strict": st.booleans(),
        },
    )
    optional: dict[str, Any] = {
        "system": texts | st.lists(text_block, max_size=2),
        "stream": st.booleans(),
        "stop_sequences": st.lists(texts, max_size=3),
        "temperature": _unit,
        "top_p": _unit,
        "top_k": st.integers(1, 100),
        "tools": st.lists(tool, max_size=2),
        "tool_choice": g.obj(
            {"type": g.pick(["auto", "any", "none", "tool"], ["x"])},
            {"name": texts, "disable_parallel_tool_use": st.booleans()},
        ),
        "thinking": g.obj(
            {"type": g.pick(["enabled", "disabled", "adaptive"], ["x"])}, {"budget_tokens": _ints_small}
        ),
        "output_config": g.obj(
            {},
            {
                "effort": st.sampled_from(["low", "medium", "high"]),
                "format": g.obj({"type": g.pick(["json_schema"], ["x"])}, {"schema": g.pick(_GOOD_SCHEMAS)}),
            },
        ),
        "metadata": g.obj({}, {"user_id": texts}),
        "service_tier": g.pick(["auto", "standard_only"]),
        "cache_control": g.obj({"type": st.just("ephemeral")}),
        # Steer only Anthropic's servers: dropped toward other APIs (clean), kept on passthrough.
        "context_management": g.obj({"edits": st.just([{"type": "clear_tool_uses_20250919"}])}),
        "speed": g.pick(["standard", "fast"]),
        "inference_geo": g.pick(["us", "eu"]),
    }
    if g.junk:
        optional.update({"temperature": numbers, "top_k": small_ints, "frobnicate": st.none()})
    required = {
        "model": st.sampled_from(["claude-x", "m"]),
        "max_tokens": small_ints if g.junk else _ints_small,
        "messages": st.lists(message, min_size=1, max_size=4),
    }
    return g.obj(required, optional)


# Half the examples are clean (supported shapes and values: they must translate), half carry junk.
openai_bodies = _openai_bodies(_Gen(False)) | _openai_bodies(_Gen(True))
anthropic_bodies = _anthropic_bodies(_Gen(False)) | _anthropic_bodies(_Gen(True))


# ----------------------------------------------------------------------------------- ParseFeature


def run_parse(api: Api, raw: bytes, method: str = "POST", limit: int = 8 * 1024 * 1024) -> RequestContext:
    """Run ParseFeature on ``raw`` (it never awaits, so no event loop is needed)."""
    path = CHAT_PATH if api is Api.OPENAI else MESSAGES_PATH
    ctx = RequestContext(path=path, method=method, headers={}, api=api, raw_body=raw)
    coro = ParseFeature(max_body_bytes=limit).on_request(ctx)
    try:
        coro.send(None)
    except StopIteration as stop:
        assert stop.value is None
        return ctx
    raise AssertionError("ParseFeature awaited something")  # pragma: no cover


def parse_or_error(api: Api, raw: bytes, **kw: Any) -> RequestContext | None:
    """The parsed context, or None after checking the refusal is a well-formed GatewayError."""
    try:
        return run_parse(api, raw, **kw)
    except GatewayError as err:
        assert err.status in (400, 405, 413), err
        assert isinstance(err.message, str) and err.message.strip()
        return None


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


# ------------------------------------------------------------------------------------ SSE checks


def client_events(data: bytes) -> list[tuple[str | None, bytes]]:
    """(event name, joined data) of each event of a client stream, by the SSE line rules.

    Asserts the framing: LF line endings only, and the stream ends on a blank line (no partial event).
    """
    if not data:
        return []
    assert data.endswith(b"\n\n"), data[-80:]
    assert b"\r" not in data
    events: list[tuple[str | None, bytes]] = []
    name: str | None = None
    datas: list[bytes] = []
    for line in data[:-1].split(b"\n"):
        if not line:
            if datas:
                events.append((name, b"\n".join(datas)))
            name, datas = None, []
        elif line.startswith(b"event:"):
            name = line[6:].strip().decode()
        elif line.startswith(b"data:"):
            value = line[5:]
            datas.append(value[1:] if value.startswith(b" ") else value)
    return events


# ------------------------------------------------------------------------ provider-shaped answers

_junk = _Gen(True)
_counts = st.integers(0, 5000) | _ints
_an_usage = _junk.obj(
    {"input_tokens": _counts, "output_tokens": _counts},
    {
        "cache_read_input_tokens": _counts,
        "cache_creation_input_tokens": _counts,
        "output_tokens_details": _junk.obj({"thinking_tokens": _counts}),
    },
)
_an_content_block = st.one_of(
    _junk.obj({"type": st.just("text"), "text": texts}),
    _junk.obj({"type": st.just("thinking"), "thinking": texts, "signature": texts}),
    _junk.obj(
        {"type": st.just("tool_use"), "id": texts, "name": texts, "input": st.dictionaries(texts, texts)}
    ),
    _junk.obj({"type": st.sampled_from(["redacted_thinking", "server_tool_use", "x"])}),
)
_stop_reasons = st.sampled_from(
    ["end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal", "pause_turn", "x"]
)
anthropic_messages = _junk.obj(
    {
        "id": texts,
        "type": st.just("message"),
        "role": st.just("assistant"),
        "model": texts,
        "content": st.lists(_an_content_block, max_size=3),
        "stop_reason": _stop_reasons | st.none(),
        "usage": _an_usage,
    },
    {"stop_sequence": texts | st.none()},
)
_oa_usage = _junk.obj(
    {"prompt_tokens": _counts, "completion_tokens": _counts, "total_tokens": _counts},
    {
        "prompt_tokens_details": _junk.obj({"cached_tokens": _counts}),
        "completion_tokens_details": json_values,
    },
)
_oa_tool_call_out = _junk.obj(
    {"id": texts, "type": st.just("function"), "function": _junk.obj({"name": texts, "arguments": arguments})}
)
_finish = (
    st.sampled_from(["stop", "length", "tool_calls", "content_filter", "function_call", "x"]) | st.none()
)
openai_completions = _junk.obj(
    {
        "id": texts,
        "object": st.just("chat.completion"),
        "created": _counts,
        "model": texts,
        "choices": st.lists(
            _junk.obj(
                {
                    "index": st.integers(0, 2),
                    "message": _junk.obj(
                        {"role": st.just("assistant"), "content": texts | st.none()},
                        {
                            "refusal": texts | st.none(),
                            "reasoning_content": texts,
                            "tool_calls": st.lists(_oa_tool_call_out, max_size=2),
                        },
                    ),
                    "finish_reason": _finish,
                },
                {"stop_reason": texts | st.integers(0, 5)},
            ),
            max_size=2,
        ),
    },
    {"usage": _oa_usage},
)
error_bodies = st.one_of(
    st.binary(max_size=64),
    json_values.map(dumps),
    _junk.obj(
        {
            "error": _junk.obj(
                {"message": texts, "type": st.sampled_from(["invalid_request_error", "api_error", ""])}
            )
        },
        {"type": st.sampled_from(["error", "x"])},
    ).map(dumps),
    _junk.obj({"object": st.just("error"), "message": texts}, {"detail": texts}).map(dumps),
)
statuses = st.sampled_from([400, 401, 403, 404, 413, 429, 500, 502, 503, 504, 529]) | st.integers(0, 999)

# --------------------------------------------------------------------------- provider SSE streams

_an_events = st.one_of(
    _junk.obj(
        {
            "type": st.just("message_start"),
            "message": _junk.obj({"id": texts, "model": texts, "usage": _an_usage}),
        }
    ),
    _junk.obj(
        {
            "type": st.just("content_block_start"),
            "index": st.integers(0, 3),
            "content_block": _an_content_block,
        }
    ),
    _junk.obj(
        {
            "type": st.just("content_block_delta"),
            "index": st.integers(0, 3),
            "delta": _junk.obj(
                {
                    "type": st.sampled_from(
                        ["text_delta", "input_json_delta", "thinking_delta", "signature_delta"]
                    )
                },
                {"text": texts, "partial_json": arguments, "thinking": texts},
            ),
        }
    ),
    _junk.obj({"type": st.just("content_block_stop"), "index": st.integers(0, 3)}),
    _junk.obj(
        {
            "type": st.just("message_delta"),
            "delta": _junk.obj({"stop_reason": _stop_reasons}),
            "usage": _an_usage,
        }
    ),
    _junk.obj({"type": st.sampled_from(["message_stop", "ping"])}),
    _junk.obj({"type": st.just("error"), "error": _junk.obj({"type": texts, "message": texts})}),
)
_oa_chunk_choice = _junk.obj(
    {
        "index": st.integers(0, 1),
        "delta": _junk.obj(
            {},
            {
                "role": st.just("assistant"),
                "content": texts,
                "reasoning_content": texts,
                "tool_calls": st.lists(
                    _junk.obj(
                        {"index": st.integers(0, 2)},
                        {
                            "id": texts,
                            "type": st.just("function"),
                            "function": _junk.obj({}, {"name": texts, "arguments": arguments}),
                        },
                    ),
                    max_size=2,
                ),
            },
        ),
        "finish_reason": _finish,
    }
)
_oa_events = st.one_of(
    _junk.obj(
        {
            "id": texts,
            "object": st.just("chat.completion.chunk"),
            "model": texts,
            "choices": st.lists(_oa_chunk_choice, max_size=2),
        },
        {"usage": _oa_usage | st.none()},
    ),
    _junk.obj({"error": _junk.obj({"message": texts, "type": texts})}),
)
_JUNK_EVENTS = [b": keep-alive", b"data: not json", b"data: [DONE]", b"event: ping", b"data: 5", b"retry: 10"]


@st.composite
def provider_streams(draw: Any, api: Api) -> list[bytes]:
    """Provider SSE bytes (JSON events in any order, wrong types, junk lines), cut into chunks."""
    events = draw(st.lists(_an_events if api is Api.ANTHROPIC else _oa_events, max_size=8))
    blocks = []
    for ev in events:
        name = ev.get("type") if api is Api.ANTHROPIC and isinstance(ev.get("type"), str) else None
        blocks.append(
            (b"event: " + name.encode() + b"\n" if name and draw(st.booleans()) else b"")
            + b"data: "
            + dumps(ev)
        )
    for _ in range(draw(st.integers(0, 2))):
        blocks.insert(draw(st.integers(0, len(blocks))), draw(st.sampled_from(_JUNK_EVENTS)))
    if api is Api.OPENAI and draw(st.booleans()):
        blocks.append(b"data: [DONE]")
    newline = draw(st.sampled_from([b"\n", b"\r\n", b"\r"]))
    raw = b"".join(b.replace(b"\n", newline) + newline + newline for b in blocks)
    if draw(st.booleans()):  # cut mid-stream
        raw = raw[: draw(st.integers(0, len(raw)))]
    cuts = sorted(draw(st.lists(st.integers(0, len(raw)), max_size=6)))
    return [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
