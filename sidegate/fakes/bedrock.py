"""The Bedrock fake's request handling: SigV4 (or a Bedrock API key) checked for real, the body
checked against botocore's Converse input shape, then the scripted behaviour and the answer, as JSON
or as an event stream (paced and broken as the behaviour asks)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import unquote

from aiohttp import web

from sidegate.fakes import wire_bedrock
from sidegate.fakes.answer import build_answer
from sidegate.fakes.aws_auth import verify
from sidegate.fakes.behavior import Script
from sidegate.fakes.faults import before_headers, end_stream
from sidegate.fakes.routes import converse


class FakeProvider(Protocol):
    """What this module reads of the server's `FakeProvider` (which imports this module)."""

    api_key: str | None
    aws_keys: dict[str, str | tuple[str, str]] | None
    aws_region: str
    fixed_text: str | None
    chunks: int
    chunk_delay_s: float
    _script: Script
    _is_closing: Callable[[], bool]


_JSON = "application/json"


def _error(
    status: int, err: str | dict[str, Any] | None, rid: str, extra: dict[str, str] | None = None
) -> web.Response:
    etype, body = wire_bedrock.error(status, err)
    headers = {"x-amzn-requestid": rid, "x-amzn-errortype": etype, **(extra or {})}
    return web.Response(status=status, body=body, content_type=_JSON, headers=headers)


def _refused(
    fp: FakeProvider, method: str, raw_path: str, hdrs: dict[str, str], raw: bytes, rid: str
) -> web.Response | None:
    """AWS's 403 for a request it does not authenticate, or None. A `Bearer` authorization is a
    Bedrock API key (`api_key`); anything else must be SigV4 by one of `aws_keys`."""
    auth = hdrs.get("authorization", "")
    if auth.startswith("Bearer "):
        if fp.api_key is not None and auth == f"Bearer {fp.api_key}":
            return None
        return _error(403, {"type": "UnrecognizedClientException", "message": "Invalid API Key format: Must start with pre-defined prefix"}, rid)  # fmt: skip
    if fp.aws_keys is None:
        return None if fp.api_key is None else _error(403, {"type": "MissingAuthenticationTokenException", "message": "Missing Authentication Token"}, rid)  # fmt: skip
    failure = verify(method, raw_path, hdrs, raw, fp.aws_keys, fp.aws_region)
    if failure is None:
        return None
    return _error(403, {"type": failure.error_type, "message": failure.message}, rid)


async def serve(fp: FakeProvider, request: web.BaseRequest, hdrs: dict[str, str], raw: bytes, body: Any, bad_json: bool) -> web.StreamResponse:  # fmt: skip
    """`POST /model/{modelId}/converse` and `/converse-stream`."""
    rid = wire_bedrock.request_id()
    started = time.monotonic()
    refused = _refused(fp, request.method, request.raw_path, hdrs, raw, rid)
    if refused is not None:
        return refused
    path = request.rel_url.raw_path  # an inference profile ARN's `/` arrives as %2F
    found = converse(request.method, path)
    if found is None:
        return _error(404, {"type": "UnknownOperationException", "message": "Unknown operation"}, rid)
    model_id, stream = unquote(found[0]), found[1]
    b = fp._script.take(path, model_id)
    if b is not None:
        await before_headers(request, b, fp._is_closing)
        if b.empty:
            extra = {
                **b.headers,
                **({"retry-after": str(b.retry_after)} if b.retry_after is not None else {}),
            }
            return web.Response(status=b.status, body=b"", headers={"x-amzn-requestid": rid, **extra})
        if b.status != 200 or b.error is not None:
            extra = {
                **b.headers,
                **({"retry-after": str(b.retry_after)} if b.retry_after is not None else {}),
            }
            return _error(b.status if b.status != 200 else 500, b.error, rid, extra)
        if b.garbage and not stream:
            return web.Response(body=b'{"output": {"message": {"role": "assistant", "content": [{"text": "cut',
                                content_type=_JSON, headers={"x-amzn-requestid": rid})  # fmt: skip
    if bad_json or not isinstance(body, dict):
        return _error(400, {"type": "SerializationException", "message": "Unexpected character or end of input."}, rid)  # fmt: skip
    problem = wire_bedrock.problem(body, model_id, stream)
    if problem:
        return _error(400, problem, rid)
    answer = build_answer(
        wire_bedrock.shim_body(body, model_id), b, fixed_text=fp.fixed_text, chunks=fp.chunks
    )
    latency = int((time.monotonic() - started) * 1000) + 1
    headers = {"x-amzn-requestid": rid, **(b.headers if b else {})}
    if not stream:
        return web.Response(
            body=wire_bedrock.answer_body(answer, latency), content_type=_JSON, headers=headers
        )
    return await _stream(fp, request, wire_bedrock.stream_frames(answer, latency), b, headers)


async def _stream(fp: FakeProvider, request: web.BaseRequest, frames: list[bytes], b: Any, headers: dict[str, str]) -> web.StreamResponse:  # fmt: skip
    """The frames, shaped by the behaviour's stream faults: cut (`truncate`), an exception frame
    (`stream_error`), a frame with a broken CRC (`garbage`), a stall, a reset, small writes."""
    stop_at, after, reset = len(frames), b"", False
    if b is not None:
        if b.truncate is not False:
            stop_at = min(
                max(1, len(frames) // 2) if b.truncate is True else int(b.truncate), len(frames) - 1
            )
        if b.reset_after_chunks is not None:
            stop_at, reset = min(b.reset_after_chunks, len(frames)), True
        if b.stream_error is not None:
            stop_at = min(int(b.stream_error.get("after", max(1, len(frames) // 2))), len(frames) - 1)
            after = wire_bedrock.exception_frame(b.stream_error)
        if b.garbage:
            bad = bytearray(frames[2])
            bad[-1] ^= 0xFF  # the message CRC no longer matches
            stop_at, after = 2, bytes(bad)
        if b.stall_after_chunks is not None:
            stop_at = min(b.stall_after_chunks, len(frames) - 1)
    delay = b.chunk_delay_s if b is not None and b.chunk_delay_s is not None else fp.chunk_delay_s
    resp = web.StreamResponse(status=200, headers={**headers, "content-type": wire_bedrock.EVENTSTREAM})
    await resp.prepare(request)
    pieces = [*frames[:stop_at], *([after] if after else [])]
    if b is not None and b.write_size:
        data = b"".join(pieces)
        pieces = [data[i : i + b.write_size] for i in range(0, len(data), b.write_size)]
        delay = max(delay, 0.001)
    elif delay <= 0:
        pieces = [b"".join(pieces)]
    for i, piece in enumerate(pieces):
        if i and delay > 0:
            await asyncio.sleep(delay)
        await resp.write(piece)
    return await end_stream(request, resp, b, fp._is_closing, reset=reset, cut=stop_at < len(frames))
