"""HTTP front (`services.front: http`): the gateway's features behind Envoy's ext_authz HTTP client.

Envoy buffers the client's request and posts it (headers + body, path prefixed with `/check`) to
this plain HTTP/1.1 server; the answer is one HTTP response instead of a gRPC ext_proc stream of
protobuf messages, which costs several times less CPU in Python (docs/performance.md).

What the answer means to Envoy (see `sidegate/bootstrap/render.py`):
- 200 = go on: `x-sidegate-route` is copied onto the request (Envoy then re-picks the route),
  `x-sidegate-meta` / `x-sidegate-lane` become dynamic metadata (namespace
  `envoy.filters.http.ext_authz`) for the per-try stage and the direct lane's access log,
  `x-ratelimit-*` / `x-sidegate-guard` go to the client with the response, and the headers named
  in `x-envoy-auth-headers-to-remove` (the client's key, internal headers) are dropped.
- any other status = Envoy answers the client with exactly this status, body and headers.
- a cache hit (a 200 the gateway produced itself) and any 5xx refusal (Envoy would take a 5xx
  from the front as the front failing, and drop its body and headers) are held here and the
  request routed to `~replay.<worker>.<key>`, a route back to this same process, which replays them
  (:meth:`Front.replay`).

PII redaction cannot rewrite the body from here: the request is marked `redact` and the per-try
stage redacts it (the same deterministic placeholders) before translating.

The same server answers the try lane's calls (`/try/...`, extproc/trylane.py).
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import Any, cast

import orjson

from extproc.prepared import prepare_stream
from extproc.trylane import TryLane, ascii_json
from sidegate.core.context import Reply
from sidegate.core.intake import access_log_fields, client_internal_headers, inbound_api, open_request
from sidegate.core.pipeline import Forward, Gateway
from sidegate.core.traceparent import HEADER as TRACEPARENT
from sidegate.core.traceparent import valid_traceparent
from sidegate.errors import error_body
from sidegate.ids import UniqueIds
from sidegate.trust import Token
from sidegate.ttlmap import TtlMap
from sidegate.wire import (
    AUTH_HEADERS_TO_REMOVE,
    CHECK_PREFIX,
    FRONT_API_HEADER,
    FRONT_LANE_HEADER,
    FRONT_META_HEADER,
    FRONT_SOURCE_HEADER,
    LANE_TRY,
    REPLAY_ROUTE,
    ROUTE_HEADER,
    TRY_PREFIX,
)
from sidegate.wire import INTERNAL_TOKEN_HEADER as TOKEN_HEADER

log = logging.getLogger("sidegate.front")

_JSON = {"content-type": "application/json"}
_OURS = (ROUTE_HEADER, FRONT_SOURCE_HEADER)
"""Internal headers that are not the client's: the route (set by this answer) and the source
address (Envoy adds it to the check request only)."""


def meta_header(meta: dict[str, Any]) -> str:
    """JSON for a header value: one line, ASCII only."""
    return ascii_json(orjson.dumps(meta)).decode()


class HeldReplies(TtlMap[Reply]):
    """Cache hits and 5xx waiting for their replay request (a moment later, same process), by a
    key the front made up (carried in the replay route value)."""

    def __init__(self, capacity: int = 4096, ttl_s: float = 30.0):
        super().__init__(capacity, ttl_s)


class Front:
    """The adapter: an HTTP request from Envoy -> RequestContext -> Gateway.run -> the HTTP answer
(a :class:`Reply`: status, body, headers)."""

    def __init__(self, gateway: Gateway, worker: int = 0, trylane: TryLane | None = None):
        self.gateway = gateway
        self.worker = worker
        self.held = HeldReplies()
        self.hold_key = UniqueIds()
        self.trylane = trylane

    def handle_now(self, target: str, headers: dict[str, str], body: bytes) -> Reply | None:
        """The answers that need no waiting (the try lane's calls, replays), or None."""
        if target.startswith(TRY_PREFIX) and self.trylane is not None:
            return self.trylane.handle(target, headers, body)
        if not target.startswith(CHECK_PREFIX):
            return self.replay(target, headers)
        return None

    async def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply:
        now = self.handle_now(target, headers, body)
        if now is not None:
            return now
        if target.startswith(TRY_PREFIX) and self.trylane is not None:  # a try to load a routing version for
            return await self.trylane.request_later(headers, body)
        path = target[len(CHECK_PREFIX) :] or "/"
        try:
            return await self.check(method, path, headers, body)
        except Exception:
            log.exception("front check failed")
            reply = Reply(500, error_body(inbound_api(path), 500, "Gateway error."), dict(_JSON))
            return self._hold(reply, {})

    async def check(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        headers[":path"], headers[":method"] = path, method  # as the features see them over ext_proc
        ctx = open_request(path, method, headers, source=headers.get(FRONT_SOURCE_HEADER, ""))
        if isinstance(ctx, Reply):
            return ctx
        if TRACEPARENT in headers:  # Envoy's span of this check call (tracing), else the client's
            ctx.traceparent = valid_traceparent(headers[TRACEPARENT])
        early = self.gateway.on_headers(ctx)
        if early is not None:  # (a 5xx, e.g. a JWT issuer's keys unavailable, goes the replay way too)
            return early if early.status < 500 else self._hold(early, access_log_fields(ctx.upstream_meta()))
        ctx.raw_body = body
        outcome = await self.gateway.run(ctx)
        if isinstance(outcome, Reply):
            if outcome.status != 200 and outcome.status < 500:
                return outcome
            return self._hold(outcome, access_log_fields(ctx.upstream_meta()))
        return self._forward(outcome, headers, body)

    def _hold(self, reply: Reply, log_fields: dict[str, str]) -> Reply:
        """Answer `reply` through the replay route (see the module docstring). It is held under a
        key this worker makes up (never the client's request id, which a client may reuse), carried
        in the route value `~replay.<worker>.<key>`."""
        key = self.hold_key()
        self.held.put(key, reply)
        return Reply(200, b"", {ROUTE_HEADER: f"{REPLAY_ROUTE}.{self.worker}.{key}", **log_fields})

    def _forward(self, outcome: Forward, headers: dict[str, str], body: bytes) -> Reply:
        meta = dict(outcome.meta)
        meta.pop("response_headers", None)  # they go to the client from this answer (no duplicates)
        meta["front"] = "http"
        if outcome.body is not None:  # the guard changed the body: the per-try stage redacts it
            meta.pop("restore", None)
            meta["redact"] = True
        out = {ROUTE_HEADER: outcome.route, FRONT_META_HEADER: meta_header(meta), FRONT_API_HEADER: str(meta.get("api", "")),
               **access_log_fields(meta), **outcome.response_headers}  # fmt: skip
        if meta.get("lane"):
            out[FRONT_LANE_HEADER] = str(meta["lane"])
        if meta.get("lane") == LANE_TRY and self.trylane is not None:  # the first try, prepared now
            out.update(self.trylane.prepare(meta, body, outcome.body, outcome.meta.get("restore")))
        elif self.trylane is not None:  # a full-lane stream: its first try's body, translated now
            out.update(prepare_stream(self.trylane.stage, meta, body, rewritten=outcome.body is not None))
        remove = [*outcome.remove_headers, *client_internal_headers(headers, _OURS)]
        if remove:
            out[AUTH_HEADERS_TO_REMOVE] = ",".join(remove)
        return Reply(200, b"", out)

    def replay(self, target: str, headers: dict[str, str]) -> Reply:
        reply = self.held.pop(headers.get(ROUTE_HEADER, "").rpartition(".")[2])
        if reply is None:
            api = inbound_api(target)
            return Reply(503, error_body(api, 503, "The cached answer expired before it was sent; retry."), dict(_JSON))
        return reply


# -- the HTTP/1.1 server ------------------------------------------------------------------------
# Envoy is the only client: well-formed requests with a Content-Length, one at a time per
# connection, kept alive. Anything else gets a 400 and the connection closed.

_MAX_HEAD = 256 * 1024
_LAST_RESORT = Reply(400, b"", {"connection": "close"})
_UNAUTHENTICATED = Reply(503, b"", {"connection": "close"})
"""A caller without the internal token (not Envoy): nothing else, whatever it asked. A 5xx, not a
401: should Envoy itself present a wrong token (a rotation half done), ext_authz takes a 5xx from
the front as the front failing and answers its own 503 in the client's API format, as with the gRPC
front, where a 4xx would reach the client verbatim and read as "your API key is wrong"."""


_REASONS = {s.value: s.phrase for s in HTTPStatus}


def _one_line(value: str) -> str:
    return value.replace("\r", " ").replace("\n", " ")


def _encode(ans: Reply) -> bytes:
    """The answer's bytes, for one write. One format string and one encode (no per-header checks
    or enum lookups): 3.7-5 µs instead of 6.8-8 µs for a prepared try's check answer (timeit, min
    of 15 runs on a loaded box; two answers per full-pipeline request)."""
    headers = ans.headers
    if "content-length" in headers:
        headers = {k: v for k, v in headers.items() if k != "content-length"}
    values = "".join(headers.values())
    if "\r" in values or "\n" in values:  # never split the answer, whatever a value holds
        headers = {k: _one_line(v) for k, v in headers.items()}
    lines = "".join([f"{k}: {v}\r\n" for k, v in headers.items()])
    head = f"HTTP/1.1 {ans.status} {_REASONS.get(ans.status, 'Status')}\r\ncontent-length: {len(ans.body)}\r\n{lines}\r\n"
    return head.encode("latin-1", "backslashreplace") + ans.body


def parse_head(raw: bytes) -> tuple[str, str, dict[str, str]]:
    """Request line and headers (lower-cased names; a repeated name keeps its last value)."""
    lines = raw.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError("malformed header line")
        headers[name.strip().lower()] = value.strip()
    return method, target, headers


class FrontProtocol(asyncio.Protocol):
    def __init__(self, front: Front, tasks: set[asyncio.Task[None]], token: Token):
        self.front = front
        self.tasks = tasks
        self.token = token
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._next()

    def _next(self) -> None:
        """Serve the requests in the buffer, in order: those answered at once here, the next one
        that waits (a check) in a task, after which this runs again."""
        while not self.busy and self.transport is not None:
            request = self._take()
            if request is None:
                return
            method, target, headers, body = request
            try:
                ans = self.front.handle_now(target, headers, body)
            except Exception:
                log.exception("front request failed")
                ans = _LAST_RESORT
            if ans is not None:  # answered at once: no task
                self.transport.write(_encode(ans))
                continue
            self.busy = True
            task = asyncio.ensure_future(self._serve(method, target, headers, body))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def _take(self) -> tuple[str, str, dict[str, str], bytes] | None:
        """The next complete request out of the buffer (None: not all here yet, or malformed)."""
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > _MAX_HEAD:
                self._fail()
            return None
        try:
            method, target, headers = parse_head(bytes(self.buf[:end]))
            length = int(headers.get("content-length", "0"))
        except ValueError:
            self._fail()
            return None
        if "transfer-encoding" in headers or length < 0:
            self._fail()
            return None
        # Before waiting for the body: a caller without the secret gets no buffer of the size it
        # declared (only its head, at most _MAX_HEAD, is ever held).
        if not self.token.valid(headers.pop(TOKEN_HEADER, None)):
            if self.transport is not None:
                self.transport.write(_encode(_UNAUTHENTICATED))
            self._close()
            return None
        start = end + 4
        if len(self.buf) < start + length:
            return None
        with memoryview(self.buf) as view:  # one copy of a body of up to max_request_bytes, not two
            body = bytes(view[start : start + length])
        del self.buf[: start + length]
        return method, target, headers, body

    async def _serve(self, method: str, target: str, headers: dict[str, str], body: bytes) -> None:
        try:
            ans = await self.front.handle(method, target, headers, body)
        except Exception:  # handle() answers its own failures; this is the last resort
            log.exception("front request failed")
            ans = _LAST_RESORT
        self.busy = False
        if self.transport is None:
            return
        self.transport.write(_encode(ans))
        self._next()

    def _fail(self) -> None:
        if self.transport is not None:
            self.transport.write(_encode(_LAST_RESORT))
        self._close()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.buf.clear()


class FrontServer:
    """The asyncio server around :class:`Front`; stops accepting on close, lets requests finish."""

    def __init__(self, front: Front, token: Token):
        self.front = front
        self.token = token
        self.tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: FrontProtocol(self.front, self.tasks, self.token), host, port, reuse_address=True
        )

    async def close(self, grace_s: float = 5.0) -> None:
        if self.server is not None:
            self.server.close()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=grace_s)
        if self.front.trylane is not None:
            self.front.trylane.close()
