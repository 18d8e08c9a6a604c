"""`FakeProvider`: an aiohttp server speaking the OpenAI, Azure OpenAI and Anthropic wire formats."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
import uuid
from typing import Any

import orjson
from aiohttp import web

from sidegate.fakes import wire_anthropic, wire_openai
from sidegate.fakes.answer import Answer, build_answer
from sidegate.fakes.behavior import Behavior, Script
from sidegate.fakes.recording import RecordedRequest, RequestLog

__all__ = ["DEFAULT_MODELS", "FakeProvider"]

DEFAULT_MODELS = [
    "gpt-4o-mini",
    "gpt-4o",
    "text-embedding-3-small",
    "claude-3-5-haiku-20241022",
    "claude-sonnet-4-5",
]
_JSON = "application/json"
_SSE = "text/event-stream; charset=utf-8"
_GARBAGE = b'{"id": "chatcmpl-garbage", "choices": [{"index": 0, "message": {"content": "cut'
_UNSET = object()


class _Dropped(Exception):
    """The connection was reset or abandoned on purpose; nothing more to write."""


def _rst(request: web.BaseRequest) -> None:
    """Close the request's TCP connection abruptly (RST, no FIN)."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _nodelay(request: web.BaseRequest) -> None:
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class FakeProvider:
    """A fake LLM provider on one port serving both schemas.

    Routes: OpenAI `POST /v1/chat/completions`, `POST /v1/embeddings`, `GET /v1/models`; Azure
    `POST /openai/deployments/{d}/chat/completions|embeddings`; Anthropic `POST /v1/messages` (and
    `GET /v1/models` when the request has `anthropic-version`). Control: `GET|DELETE /_fake/requests`,
    `POST|GET|DELETE /_fake/script`, `POST /_fake/default`, `POST /_fake/reset`.

    `chunks`/`chunk_delay_s` shape streams; `fixed_text` replaces the "Echo: <last user text>" answer;
    `api_key`, when set, must be presented (Bearer, `x-api-key` or `api-key`) or the answer is 401.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        chunks: int = 4,
        chunk_delay_s: float = 0.0,
        fixed_text: str | None = None,
        models: list[str] | None = None,
        embedding_dims: int = 1536,
        api_key: str | None = None,
        max_log: int = 10_000,
    ) -> None:
        self.host = host
        self._port = port
        self.chunks = chunks
        self.chunk_delay_s = chunk_delay_s
        self.fixed_text = fixed_text
        self.models = list(models or DEFAULT_MODELS)
        self.embedding_dims = embedding_dims
        self.api_key = api_key
        self.log = RequestLog(max_log)
        self._script = Script()
        self._runner: web.ServerRunner | None = None
        self._closing = False
        self.served = 0  # requests received (excluding control calls)
        self.in_flight = 0  # handlers running now (a hang releases its slot when the client leaves)

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> FakeProvider:
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((self.host, self._port))
        self._port = sock.getsockname()[1]
        server = web.Server(self._handle, handler_cancellation=True, access_log=None)
        self._runner = web.ServerRunner(server, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.SockSite(self._runner, sock, backlog=1024).start()
        self._closing = False
        return self

    async def stop(self) -> None:
        self._closing = True
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeProvider:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}"

    # -- control (in-process; thread-safe) ---------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        """Requests received so far (oldest first, capped), excluding `/_fake/*` control calls."""
        return self.log.items()

    def clear_requests(self) -> None:
        self.log.clear()

    def script(self, behaviors: list[dict[str, Any] | Behavior]) -> None:
        """Queue behaviours; each is consumed by the next matching request (see `Behavior`)."""
        self._script.push(behaviors)

    def set_default(self, behavior: dict[str, Any] | Behavior | None) -> None:
        """The behaviour for requests no queued behaviour matches (None: normal answers)."""
        self._script.set_default(behavior)

    @property
    def pending_script(self) -> list[Behavior]:
        return self._script.pending()

    def reset(self) -> None:
        """Clear the script, the default behaviour and the request log."""
        self._script.clear()
        self.log.clear()

    # -- HTTP ------------------------------------------------------------------------------------
    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        if path.startswith("/_fake/"):
            return await self._control(request, path)
        _nodelay(request)
        body = await request.read()
        parsed: Any = None
        bad_json = False
        if body:
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError:
                bad_json = True
        hdrs: dict[str, str] = {}
        for k, v in request.headers.items():
            k = k.lower()
            hdrs[k] = f"{hdrs[k]}, {v}" if k in hdrs else v
        self.log.add(
            RecordedRequest(request.method, path, dict(request.query), hdrs, body, parsed, time.time())
        )
        self.served += 1
        self.in_flight += 1
        try:
            return await self._serve(request, path, hdrs, parsed, bad_json)
        except _Dropped:
            # The connection is gone; aiohttp cancels this handler when it notices (bounded wait).
            await asyncio.sleep(1.0)
            raise
        finally:
            self.in_flight -= 1

    async def _serve(
        self, request: web.BaseRequest, path: str, hdrs: dict[str, str], body: Any, bad_json: bool
    ) -> web.StreamResponse:
        anthropic = path.startswith("/v1/messages") or (path == "/v1/models" and "anthropic-version" in hdrs)
        rid = "req_" + uuid.uuid4().hex[:24]
        started = time.monotonic()
        base_headers = wire_anthropic.headers(rid) if anthropic else wire_openai.headers(rid, 1)

        def error(
            status: int,
            err: str | dict[str, Any] | None = None,
            retry_after: Any = None,
            extra: dict[str, str] | None = None,
        ) -> web.Response:
            payload = (
                wire_anthropic.error_body(status, err, rid)
                if anthropic
                else wire_openai.error_body(status, err)
            )
            h = {**base_headers, **(extra or {})}
            if retry_after is not None:
                h["retry-after"] = str(retry_after)
            elif status == 429:
                h["retry-after"] = "1"
            if status == 429 and not anthropic:
                h["x-ratelimit-remaining-requests"] = "0"
            return web.Response(status=status, body=payload, content_type=_JSON, headers=h)

        # Authentication first, as the real providers do (does not consume the script).
        if self.api_key is not None and not self._authorized(hdrs):
            return error(401)
        model = body.get("model") if isinstance(body, dict) else None
        if path.startswith("/openai/deployments/"):
            deployment = path.split("/")[3]
            if isinstance(body, dict) and not isinstance(body.get("model"), str):
                body = {**body, "model": deployment}
            model = deployment
        b = self._script.take(path, model if isinstance(model, str) else None)
        if b is not None:
            await self._faults_before_headers(request, b)
            if b.empty:
                h = {**base_headers, **b.headers, **({"retry-after": str(b.retry_after)} if b.retry_after is not None else {})}
                return web.Response(status=b.status, body=b"", headers=h)
            if b.status != 200 or b.error is not None:
                status = b.status if b.status != 200 else 500
                return error(status, b.error, b.retry_after, b.headers)
            if b.garbage and not _wants_stream(body):
                return web.Response(
                    status=200, body=_GARBAGE, content_type=_JSON, headers={**base_headers, **b.headers}
                )
        route = self._route(request.method, path)
        if route is None:
            return error(404, "Not found" if anthropic else f"Invalid URL ({request.method} {path})")
        if route == "models":
            payload = wire_anthropic.models(self.models) if anthropic else wire_openai.models(self.models)
            return web.Response(body=payload, content_type=_JSON, headers=base_headers)
        if bad_json or not isinstance(body, dict):
            return error(
                400,
                "We could not parse the JSON body of your request."
                if not anthropic
                else "There was an error parsing the body of your request.",
            )
        problem = _validate(route, body)
        if problem:
            return error(400, problem)
        if route == "embeddings":
            return web.Response(
                body=wire_openai.embeddings(body, self.embedding_dims),
                content_type=_JSON,
                headers=base_headers,
            )
        answer = build_answer(body, b, fixed_text=self.fixed_text, chunks=self.chunks)
        extra = b.headers if b else {}
        if not body.get("stream"):
            if not anthropic:
                base_headers["openai-processing-ms"] = str(int((time.monotonic() - started) * 1000) + 1)
            payload = wire_anthropic.message(answer) if anthropic else wire_openai.completion(answer)
            headers = {**base_headers, **extra}
            if any(k.lower() == "content-type" for k in headers):  # scripted: e.g. with a charset
                return web.Response(body=payload, headers=headers)
            return web.Response(body=payload, content_type=_JSON, headers=headers)
        return await self._stream(request, answer, body, b, anthropic, {**base_headers, **extra})

    def _authorized(self, hdrs: dict[str, str]) -> bool:
        key = self.api_key
        return (
            hdrs.get("authorization") == f"Bearer {key}"
            or hdrs.get("x-api-key") == key
            or hdrs.get("api-key") == key
        )

    @staticmethod
    def _route(method: str, path: str) -> str | None:
        if method == "GET" and path == "/v1/models":
            return "models"
        if method != "POST":
            return None
        if path == "/v1/chat/completions":
            return "chat"
        if path == "/v1/messages":
            return "messages"
        if path == "/v1/embeddings":
            return "embeddings"
        if path.startswith("/openai/deployments/"):
            parts = path.split("/")
            if len(parts) == 6 and parts[4] == "chat" and parts[5] == "completions":
                return "azure_chat"
            if len(parts) == 5 and parts[4] == "embeddings":
                return "embeddings"
        return None

    async def _faults_before_headers(self, request: web.BaseRequest, b: Behavior) -> None:
        if b.delay_s > 0:
            await asyncio.sleep(b.delay_s)
        if b.hang:
            await self._hang(request, b.hang_max_s)
            _rst(request)
            raise _Dropped
        if b.reset and b.reset_after_chunks is None:
            _rst(request)
            raise _Dropped

    async def _hang(self, request: web.BaseRequest, max_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_s
        while loop.time() < deadline and not self._closing:
            transport = request.transport
            if transport is None or transport.is_closing():
                return
            await asyncio.sleep(0.05)

    async def _stream(
        self,
        request: web.BaseRequest,
        a: Answer,
        body: dict[str, Any],
        b: Behavior | None,
        anthropic: bool,
        headers: dict[str, str],
    ) -> web.StreamResponse:
        if anthropic:
            events = wire_anthropic.stream_events(a)
        else:
            opts = body.get("stream_options")
            events = wire_openai.stream_events(a, isinstance(opts, dict) and bool(opts.get("include_usage")))
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
                after_stop = wire_anthropic.error_event(se) if anthropic else wire_openai.error_event(se)
            if b.garbage:
                stop_at, after_stop = min(2, len(events) - 1), b"data: {not json\n\n"
            if b.stall_after_chunks is not None:
                stop_at = min(b.stall_after_chunks, len(events) - 1)
            if b.bad_event is not None:
                at = min(int(b.bad_event.get("after", 2)), len(events) - 1)
                bad = b"data: " + str(b.bad_event.get("data", "")).encode() + b"\n\n"
                events = [*events[:at], bad, *events[at:]]
                stop_at += 1 if stop_at > at else 0
        delay = b.chunk_delay_s if b is not None and b.chunk_delay_s is not None else self.chunk_delay_s
        resp = web.StreamResponse(
            status=200, headers={**headers, "content-type": _SSE, "cache-control": "no-cache"}
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
        if b is not None and b.stall_after_chunks is not None:
            await self._hang(request, b.hang_max_s)  # a provider gone silent mid-stream
            reset = True
        if reset:
            await asyncio.sleep(0.01)  # let the events leave before the RST
            _rst(request)
            raise _Dropped
        if b is not None and b.linger_s > 0:
            await asyncio.sleep(b.linger_s)
        await resp.write_eof()
        if stop_at < len(events):
            resp.force_close()
        return resp

    # -- control endpoints -------------------------------------------------------------------------
    async def _control(self, request: web.BaseRequest, path: str) -> web.Response:
        method = request.method
        try:
            if path == "/_fake/requests":
                if method == "DELETE":
                    self.clear_requests()
                    return _json({"cleared": True})
                return _json([r.to_dict() for r in self.requests])
            if path == "/_fake/script":
                if method == "DELETE":
                    self._script.clear()
                    return _json({"cleared": True})
                if method == "POST":
                    items = orjson.loads(await request.read())
                    self.script(items if isinstance(items, list) else [items])
                return _json({"pending": len(self.pending_script)})
            if path == "/_fake/default" and method in ("POST", "PUT"):
                raw = await request.read()
                self.set_default(orjson.loads(raw) if raw.strip() else None)
                return _json({"ok": True})
            if path == "/_fake/reset" and method == "POST":
                self.reset()
                return _json({"ok": True})
            if path == "/_fake/health":
                return _json({"ok": True, "served": self.served})
        except (ValueError, TypeError) as e:
            return _json({"error": str(e)}, status=400)
        return _json({"error": "unknown control endpoint"}, status=404)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type=_JSON)


def _wants_stream(body: Any) -> bool:
    return isinstance(body, dict) and bool(body.get("stream"))


def _validate(route: str, body: dict[str, Any]) -> str | None:
    """The few checks the real APIs make that clients most often trip over."""
    if route in ("chat", "azure_chat", "messages") and not isinstance(body.get("messages"), list):
        return (
            "messages: Field required" if route == "messages" else "Missing required parameter: 'messages'."
        )
    if route in ("chat", "messages", "embeddings") and not isinstance(body.get("model"), str):
        return "model: Field required" if route == "messages" else "Missing required parameter: 'model'."
    if route == "messages" and not isinstance(body.get("max_tokens"), int):
        return "max_tokens: Field required"
    if route == "embeddings" and body.get("input") in (None, "", []):
        return "'input' is a required property"
    return None
