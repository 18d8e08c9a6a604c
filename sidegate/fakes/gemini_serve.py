"""The Gemini fake's handler: the Gemini API (`/v1beta/models/M:method`, key in `x-goog-api-key` or
`?key=`) and Vertex AI's publisher models (`Authorization: Bearer`), answering from the same
behaviours as the other wires (scripted statuses and faults, tool calls, structured output,
usage), with Google's error bodies."""

from __future__ import annotations

import time
from typing import Any, Protocol

from aiohttp import web

from sidegate.fakes import gemini_checks, wire_gemini
from sidegate.fakes.answer import build_answer
from sidegate.fakes.behavior import Script
from sidegate.fakes.faults import before_headers
from sidegate.fakes.stream import stream_answer
from sidegate.fakes.wire_gemini import GeminiCall


class FakeProvider(Protocol):
    """What the handler uses of `server.FakeProvider` (which imports this module)."""

    api_key: str | None
    fixed_text: str | None
    chunks: int
    chunk_delay_s: float
    _script: Script

    def _is_closing(self) -> bool: ...


__all__ = ["gemini_endpoint", "serve_gemini"]

_JSON = "application/json"
_GARBAGE = b'{"candidates": [{"content": {"parts": [{"text": "cut'
_API_KEY_INVALID = [
    {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "API_KEY_INVALID",
        "domain": "googleapis.com",
        "metadata": {"service": "generativelanguage.googleapis.com"},
    }
]


def gemini_endpoint(method: str, path: str) -> str | None:
    """The request log's name for a Gemini call (`gemini_generate`, `gemini_stream`...), or None."""
    call = wire_gemini.parse_path(path) if method == "POST" else None
    return call.endpoint if call is not None else None


def _headers(started: float) -> dict[str, str]:
    return {
        "server": "scaffolding on HTTPServer2",
        "server-timing": f"gfet4t7; dur={int((time.monotonic() - started) * 1000) + 1}",
        "vary": "Origin, X-Origin, Referer",
    }


def _error(
    status: int,
    message: str | dict[str, Any] | None = None,
    *,
    retry_after: Any = None,
    extra: dict[str, str] | None = None,
    details: list[Any] | None = None,
) -> web.Response:
    """Google's error body; a 429 carries its delay in the `RetryInfo` detail Google's clients
    read, and also in a `retry-after` header unless scripted as Google's own duration
    (`retry_after: "9s"`: the detail only, as the Gemini API answers)."""
    headers = dict(extra or {})
    if status == 429:
        delay = retry_after if retry_after is not None else 1
        if isinstance(delay, str) and delay.endswith("s"):
            delay = delay.removesuffix("s")
        else:
            headers.setdefault("retry-after", str(delay))
        details = [*(details or []), wire_gemini.retry_info(delay)]
    elif retry_after is not None:
        headers["retry-after"] = str(retry_after)
    body = wire_gemini.error_body(status, message, details)
    return web.Response(status=status, body=body, content_type=_JSON, headers=headers)


def _auth_problem(
    fake: FakeProvider, call: GeminiCall, hdrs: dict[str, str], query: Any
) -> web.Response | None:
    """Gemini API: a missing key is a 403, a wrong one a 400 `API_KEY_INVALID` (as Google answers);
    Vertex AI: a bearer that is not a valid token is a 401."""
    key = fake.api_key
    if key is None:
        return None
    if call.vertex:
        if hdrs.get("authorization") == f"Bearer {key}":
            return None
        return _error(
            401,
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
            "or other valid authentication credential.",
        )
    given = hdrs.get("x-goog-api-key") or query.get("key")
    if given == key:
        return None
    if not given:
        return _error(
            403,
            "Method doesn't allow unregistered callers (callers without established identity). Please use "
            "API Key or other form of API consumer identity to call this API.",
        )
    return _error(400, "API key not valid. Please pass a valid API key.", details=_API_KEY_INVALID)


async def serve_gemini(
    fake: FakeProvider,
    request: web.BaseRequest,
    call: GeminiCall,
    hdrs: dict[str, str],
    body: Any,
    bad_json: bool,
) -> web.StreamResponse:
    started = time.monotonic()
    denied = _auth_problem(fake, call, hdrs, request.query)
    if denied is not None:
        return denied
    b = fake._script.take(request.path, call.model)
    if b is not None:
        await before_headers(request, b, fake._is_closing)
        if b.empty:
            retry = {"retry-after": str(b.retry_after)} if b.retry_after is not None else {}
            return web.Response(status=b.status, body=b"", headers={**b.headers, **retry})
        if b.status != 200 or b.error is not None:
            return _error(
                b.status if b.status != 200 else 500, b.error, retry_after=b.retry_after, extra=b.headers
            )
        if b.garbage and call.method != "streamGenerateContent":
            return web.Response(body=_GARBAGE, content_type=_JSON, headers=b.headers)
    if request.method != "POST":
        return _error(404, f"Method not found: {request.method} {request.path}")
    if bad_json or not isinstance(body, dict):
        return _error(400, "Invalid JSON payload received. Expected an object.")
    headers = {**_headers(started), **(b.headers if b else {})}
    if call.method in ("embedContent", "batchEmbedContents"):
        embed = call.method == "embedContent"
        problem = (
            gemini_checks.embed_problem(body, call.model)
            if embed
            else gemini_checks.batch_problem(body, call.model)
        )
        if problem:
            return _error(400, problem)
        out = wire_gemini.embed(body) if embed else wire_gemini.batch_embed(body)
        return web.Response(body=out, content_type=_JSON, headers=headers)
    counting = call.method == "countTokens"
    inner = body.get("generateContentRequest") if counting else None
    checked = inner if isinstance(inner, dict) else body
    problem = gemini_checks.generate_problem(checked, call.vertex, "" if counting else call.model)
    if problem:
        return _error(400, problem)
    if counting:
        return web.Response(
            body=wire_gemini.count_tokens(body, call.model), content_type=_JSON, headers=headers
        )
    view = wire_gemini.chat_view(body, call.model)
    answer = build_answer(view, b, fixed_text=fake.fixed_text, chunks=fake.chunks)
    rid = wire_gemini.new_response_id()
    if call.method == "generateContent":
        return web.Response(body=wire_gemini.response_body(answer, rid), content_type=_JSON, headers=headers)
    chunks = wire_gemini.stream_chunks(answer, rid)
    if request.query.get("alt") != "sse":  # the JSON array Google streams without `alt=sse`
        return web.Response(body=wire_gemini.json_array(chunks), content_type=_JSON, headers=headers)
    return await stream_answer(
        request,
        wire_gemini.sse_events(chunks),
        wire_gemini.error_event,
        b,
        headers,
        chunk_delay_s=fake.chunk_delay_s,
        closing=fake._is_closing,
    )
