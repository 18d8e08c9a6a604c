"""The fake's streamed answers: an answer's SSE events, paced and broken as a behaviour asks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web

from sidegate.fakes import wire_anthropic, wire_openai
from sidegate.fakes.answer import Answer
from sidegate.fakes.behavior import Behavior
from sidegate.fakes.faults import end_stream

SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"


def api_events(a: Answer, body: dict[str, Any], anthropic: bool) -> list[bytes]:
    """A chat completion's or a message's SSE events."""
    if anthropic:
        return wire_anthropic.stream_events(a)
    opts = body.get("stream_options")
    return wire_openai.stream_events(a, isinstance(opts, dict) and bool(opts.get("include_usage")))


async def stream_answer(
    request: web.BaseRequest,
    events: list[bytes],
    error_event: Callable[[dict[str, Any]], bytes],
    b: Behavior | None,
    headers: dict[str, str],
    *,
    chunk_delay_s: float,
    closing: Callable[[], bool],
) -> web.StreamResponse:
    """Send an answer's SSE ``events``, shaped by the behaviour's stream faults (cut, error event made
    by ``error_event``, garbage, stall, bad event, small writes, reset, linger); ``chunk_delay_s`` is
    the default pace."""
    stop_at = len(events)
    after_stop: bytes | None = None
    reset = False
    if b is not None:
        if b.truncate is not False:
            stop_at = max(1, len(events) // 2) if b.truncate is True else int(b.truncate)
            stop_at = min(stop_at, len(events) - 1)
        if b.reset_after_chunks is not None:
            stop_at, reset = min(b.reset_after_chunks, len(events)), True
        if b.stream_error is not None:
            se = b.stream_error
            stop_at = min(int(se.get("after", max(1, len(events) // 2))), len(events) - 1)
            after_stop = error_event({**se, "after": stop_at})
        if b.garbage:
            stop_at, after_stop = min(2, len(events) - 1), b"data: {not json\n\n"
        if b.stall_after_chunks is not None:
            stop_at = min(b.stall_after_chunks, len(events) - 1)
        if b.bad_event is not None:
            at = min(int(b.bad_event.get("after", 2)), len(events) - 1)
            bad = b"data: " + str(b.bad_event.get("data", "")).encode() + b"\n\n"
            events = [*events[:at], bad, *events[at:]]
            stop_at += 1 if stop_at > at else 0
    delay = b.chunk_delay_s if b is not None and b.chunk_delay_s is not None else chunk_delay_s
    resp = web.StreamResponse(
        status=200, headers={**headers, "content-type": SSE_CONTENT_TYPE, "cache-control": "no-cache"}
    )
    await resp.prepare(request)
    if b is not None and b.write_size:
        data = b"".join(events[:stop_at]) + (after_stop or b"")
        for i in range(0, len(data), b.write_size):
            await resp.write(data[i : i + b.write_size])
            await asyncio.sleep(max(delay, 0.001))  # let each piece leave on its own
    elif delay <= 0:
        data = b"".join(events[:stop_at]) + (after_stop or b"")
        if data:
            await resp.write(data)
    else:
        for i, ev in enumerate(events[:stop_at]):
            if i:
                await asyncio.sleep(delay)
            await resp.write(ev)
        if after_stop:
            await resp.write(after_stop)
    return await end_stream(request, resp, b, closing, reset=reset, cut=stop_at < len(events))
