"""Try lane: the per-try stage over HTTP, for the HTTP front's non-streaming requests.

Each provider cluster of the try lane runs a small Lua upstream filter (sidegate/render.py,
`_TRY_LUA`) that, once per try, posts the client's body to this worker's front
(`POST /try/request`) and replaces it with the answer: the provider's body, and the header changes
in `x-sidegate-set` (`name=value&...`, percent-encoded) and `x-sidegate-remove` (`a,b`). The
provider's buffered response then comes back (`POST /try/response`, to the same worker) and leaves
translated, with its status in `x-sidegate-status`. Two plain HTTP exchanges instead of a gRPC
ext_proc stream of four protobuf messages: the same :class:`UpstreamTry` does the work either way.

The first try is usually prepared by the front itself (:meth:`TryLane.prepare`): when the chain's
first group is a single provider whose key comes from one environment variable, the check's answer
carries the translated body and header changes (`x-sidegate-body`, ASCII JSON, at most
`PREPARED_MAX` bytes) and the Lua sets them with the key from Envoy's environment, without a call;
retries, and requests that cannot be prepared, make the `/try/request` call.

Tries are held under keys this worker makes up (`<worker>.<random><counter>`), never the client's
request id. A try whose response never comes back is settled exactly once: when the request's next
try starts (it names the previous one; that one is then not final), when the request's access-log
entry arrives (:meth:`TryLane.abandon`; a key naming another worker is passed on with
`POST /try/abandon`), at shutdown, or when it expires (swept every few seconds).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import secrets
import time
from collections import OrderedDict
from typing import Any

import orjson

from extproc.context import Reply
from extproc.upstream import HeaderChanges, Upstream, UpstreamTry
from sidegate.errors import Api, GatewayError, error_body, render
from sidegate.render import FRONT_API_HEADER, FRONT_META_HEADER, TRY_PREFIX, try_cluster_name, try_credential

log = logging.getLogger("sidegate.trylane")

SET_HEADER = "x-sidegate-set"
REMOVE_HEADER = "x-sidegate-remove"
STATUS_HEADER = "x-sidegate-status"
ANSWER_HEADER = "x-sidegate-answer"
"""On a refusal: the body is the client's error, in its API's format (Lua relays it as is)."""
PASSED_PREFIX = "x-sidegate-h-"
BODY_HEADER = "x-sidegate-body"
PREPARED_HEADER = "x-sidegate-prepared"
"""The try-lane cluster the front prepared the first try for (its Lua applies it on attempt 1)."""
PREPARED_MAX = 32 * 1024
_JSON = {"content-type": "application/json", ANSWER_HEADER: "1"}


def _escape(s: str) -> str:
    """Percent-encode what the `name=value&...` format reserves (header values hold no CR/LF)."""
    return s.replace("%", "%25").replace("&", "%26").replace("=", "%3D") if ("%" in s or "&" in s or "=" in s) else s


def encode_changes(changes: HeaderChanges) -> dict[str, str]:
    """Header changes -> the two answer headers the Lua filter applies (removals first)."""
    out: dict[str, str] = {}
    if changes.set:
        out[SET_HEADER] = "&".join(f"{_escape(k)}={_escape(v)}" for k, v in changes.set.items())
    remove = [h for h in changes.remove if h not in changes.set]
    if remove:
        out[REMOVE_HEADER] = ",".join(remove)
    return out


def _refusal(api: Api, e: Exception) -> Reply:
    """A try refused before the provider, in the client's format (Lua relays it as is)."""
    if isinstance(e, GatewayError):
        return Reply(e.status, render(api, e), dict(_JSON))
    log.error("try lane: request failed", exc_info=e)
    return Reply(500, error_body(api, 500, "Gateway error."), dict(_JSON))


async def _post_abandon(host: str, port: int, key: str, retried: bool) -> None:
    """One `POST /try/abandon` to another worker's front (best effort: expiry settles it anyway)."""
    key = key.replace("\r", "").replace("\n", "")
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2.0)
        writer.write(f"POST {TRY_PREFIX}abandon HTTP/1.1\r\nhost: sidegate-front\r\nx-sidegate-try: {key}\r\n"
                     f"x-sidegate-retried: {int(retried)}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                     .encode("latin-1", "replace"))  # fmt: skip
        await asyncio.wait_for(reader.read(256), 2.0)
        writer.close()
    except (TimeoutError, OSError):
        log.warning("try lane: could not reach worker port %d to settle an aborted try", port)


class Tries:
    """Tries between their request and their response, by a key this worker made up
    (`<worker>.<random><counter>`: never the client's request id, which a client may reuse)."""

    def __init__(self, ttl_s: float, capacity: int = 65536):
        self.ttl_s = ttl_s
        self.capacity = capacity
        self._items: OrderedDict[str, tuple[float, UpstreamTry]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, key: str, t: UpstreamTry) -> None:
        self._items[key] = (time.monotonic() + self.ttl_s, t)
        self.sweep()

    def take(self, key: str) -> UpstreamTry | None:
        item = self._items.pop(key, None)
        return item[1] if item is not None else None

    def abandon(self, key: str, retried: bool = False) -> None:
        """The request is over (or moved on to its next try: `retried`) without this try's
        response: settle it as aborted (a retried one is left to the next try)."""
        item = self._items.pop(key, None)
        if item is not None:
            item[1].close(retried=retried)

    def abandon_all(self) -> None:
        while self._items:
            self._items.popitem(last=False)[1][1].close()

    def sweep(self) -> None:
        now = time.monotonic()
        while self._items:
            key, (deadline, t) = next(iter(self._items.items()))
            if deadline > now and len(self._items) <= self.capacity:
                break
            del self._items[key]
            t.close()


class TryLane:
    """The adapter: the Lua filter's two calls -> :class:`UpstreamTry` -> answers."""

    def __init__(self, upstream: Upstream, worker: int = 0, front_host: str = "127.0.0.1", front_port: int = 0):
        self.upstream = upstream
        self.worker = str(worker)
        self.front_host = front_host
        self.front_port = front_port
        """This worker's front port (worker w listens on front_port - worker + w)."""
        self._tasks: set[asyncio.Task[None]] = set()
        # A try cannot outlive its per-try timeout (the route's timeout may be 0: none).
        longest = max((m.per_try_timeout_s for m in upstream.cfg.models.values()), default=60.0)
        self.tries = Tries(ttl_s=longest + 30.0)
        self._prefix = f"{self.worker}.{secrets.token_hex(4)}"
        self._serial = itertools.count()
        self._sweeper: asyncio.Task[None] | None = None

    def new_key(self) -> str:
        return f"{self._prefix}{next(self._serial):x}"

    def start(self, every_s: float = 5.0) -> None:
        """Expire tries whose response never came even when no new try arrives."""

        async def sweep() -> None:
            while True:
                await asyncio.sleep(every_s)
                self.tries.sweep()

        self._sweeper = asyncio.get_running_loop().create_task(sweep())

    def close(self) -> None:
        """Shutting down: settle what is still pending as aborted."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.tries.abandon_all()

    def prepare(self, meta: dict[str, Any], body: bytes) -> dict[str, str]:
        """The first try, done at check time (answer headers for the front; {} when the Lua must
        call instead: a weighted first group, a key pool, a large body, any error)."""
        m = self.upstream.cfg.models.get(str(meta.get("model", "")))
        groups = m.groups() if m is not None else []
        start = int(meta.get("start", 0))
        if start >= len(groups) or len(groups[start]) != 1:
            return {}
        provider = self.upstream.cfg.providers[groups[start][0].provider]
        cred = try_credential(provider)
        if cred is None:
            return {}
        cluster = try_cluster_name(groups[start][0].provider)
        try:
            t = self.upstream.start_try(meta, cluster, 1)
            changes = t.request_headers()
            out, body_changes = t.request_body(body)
        except Exception:  # the /try/request call answers it (in the client's format)
            return {}
        if not out.isascii():  # header values are ASCII: the same JSON with \u escapes
            out = json.dumps(orjson.loads(out), ensure_ascii=True, separators=(",", ":")).encode()
        if len(out) > PREPARED_MAX:
            t.done = True  # never started: nothing to settle
            return {}
        changes.set.update(body_changes.set)
        changes.set["content-length"] = str(len(out))
        changes.set.pop(cred[0], None)  # the key: the Lua reads it from Envoy's environment
        key = self.new_key()
        self.tries.put(key, t)
        return {BODY_HEADER: out.decode(), PREPARED_HEADER: cluster, **encode_changes(changes),
                "x-sidegate-worker": self.worker, "x-sidegate-try": key}  # fmt: skip

    def handle(self, target: str, headers: dict[str, str], body: bytes) -> Reply:
        if target.endswith("/request"):
            return self.request(headers, body)
        if target.endswith("/abandon"):  # another worker learnt that this try is over
            self.tries.abandon(headers.get("x-sidegate-try", ""), retried=headers.get("x-sidegate-retried") == "1")
            return Reply(200, b"", {})
        return self.response(headers, body)

    def abandon(self, key: str, retried: bool = False) -> None:
        """A try is over without its response (the access log says the request ended, or Envoy
        started the next try: `retried`): settle it here, or on the worker its key names."""
        worker = key.split(".", 1)[0]
        if worker == self.worker:
            self.tries.abandon(key, retried)
        elif worker.isdigit() and self.front_port:
            port = self.front_port - int(self.worker) + int(worker)
            task = asyncio.get_running_loop().create_task(_post_abandon(self.front_host, port, key, retried))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def request(self, headers: dict[str, str], body: bytes) -> Reply:
        try:
            meta = orjson.loads(headers.get(FRONT_META_HEADER) or "{}")
        except orjson.JSONDecodeError:
            meta = {}
        api = Api(meta.get("api", "openai")) if meta.get("api") in ("openai", "anthropic") else Api.OPENAI
        previous = headers.get("x-sidegate-previous")
        try:
            t = self.upstream.start_try(meta, headers.get("x-sidegate-cluster", ""), int(headers.get("x-sidegate-attempt") or 1))
        except Exception as e:
            if previous:  # this try cannot start: the previous one is the request's last
                self.abandon(previous)
            return _refusal(api, e)
        if previous:  # Envoy retried: the previous try never got its response (per-try timeout)
            self.abandon(previous, retried=True)
        try:
            changes = t.request_headers()
            out, body_changes = t.request_body(body)
        except Exception as e:
            t.close()  # refused before the provider: the reservation is settled (nothing used)
            return _refusal(api, e)
        changes.set.update(body_changes.set)
        key = self.new_key()
        self.tries.put(key, t)
        return Reply(200, out, {**encode_changes(changes), "x-sidegate-worker": self.worker, "x-sidegate-try": key})

    def response(self, headers: dict[str, str], body: bytes) -> Reply:
        t = self.tries.take(headers.get("x-sidegate-try", ""))
        if t is None:
            api = Api.ANTHROPIC if headers.get(FRONT_API_HEADER) == "anthropic" else Api.OPENAI
            msg = "Sidegate: this try's state was lost (it expired or the worker restarted)."
            return Reply(200, error_body(api, 502, msg), {STATUS_HEADER: "502", SET_HEADER: "content-type=application%2Fjson"})
        try:
            status = int(headers.get(STATUS_HEADER) or 0)
            provider = {k[len(PASSED_PREFIX) :]: v for k, v in headers.items() if k.startswith(PASSED_PREFIX)}
            mode, changes = t.response_headers(status, provider)
            out = t.response_chunk(body, True) if mode == "streamed" else t.response_body(body)
        except Exception:
            log.exception("try lane: response failed")
            t.close()
            return Reply(200, error_body(t.inbound, 502, "Gateway error."), {STATUS_HEADER: "502", SET_HEADER: "content-type=application%2Fjson"})
        changes.remove = [h for h in changes.remove if h != "content-length"]  # Lua sets it from the body
        return Reply(200, out, {STATUS_HEADER: str(t.status), **encode_changes(changes)})
