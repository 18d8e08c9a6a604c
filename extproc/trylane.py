"""Try lane: the per-try stage over HTTP, for the HTTP front's non-streaming requests.

Each provider cluster of the try lane runs a small Lua upstream filter (sidegate/bootstrap/try_lane.py,
lua/envoy_try_lane.lua) that, once per try, posts the client's body to this worker's front
(`POST /try/request`) and replaces it with the answer: the provider's body, and the header changes
in `x-sidegate-set` (`name=value&...`, percent-encoded) and `x-sidegate-remove` (`a,b`). The
provider's buffered response then comes back (`POST /try/response`, to the same worker) and leaves
translated, with its status in `x-sidegate-status`. Two plain HTTP exchanges instead of a gRPC
ext_proc stream of four protobuf messages: the same :class:`ProviderTry` does the work either way.

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
import json
import logging
from typing import Any

import orjson

from sidegate.core.context import Reply
from sidegate.core.live import ROUTING_VERSION_KEY
from sidegate.core.traceparent import HEADER as TRACEPARENT
from sidegate.core.traceparent import set_try_parent
from sidegate.core.tries import HeaderChanges, ProviderTry, TryStage
from sidegate.core.try_endpoints import TryAnswered
from sidegate.credentials.env import env_credential
from sidegate.errors import Api, GatewayError, error_body, format_error
from sidegate.ids import UniqueIds
from sidegate.lanes import preparable_first_try
from sidegate.ttlmap import TtlMap
from sidegate.wire import FRONT_API_HEADER, FRONT_META_HEADER, TRY_PREFIX, TryWire, try_cluster_name
from sidegate.wire import INTERNAL_TOKEN_HEADER as TOKEN_HEADER

log = logging.getLogger("sidegate.trylane")

PREPARED_MAX = 32 * 1024
"""Largest body the front prepares (it travels in a header of the check's answer)."""
_JSON = {"content-type": "application/json", TryWire.ANSWER: "1"}


def ascii_json(raw: bytes) -> bytes:
    """JSON fit for a header value (ASCII only: HTTP/1 header values are not UTF-8), the same
    document with `\\u` escapes when it holds other characters."""
    return raw if raw.isascii() else json.dumps(orjson.loads(raw), ensure_ascii=True, separators=(",", ":")).encode()


def _escape(s: str) -> str:
    """Percent-encode what the `name=value&...` format reserves (header values hold no CR/LF)."""
    return s.replace("%", "%25").replace("&", "%26").replace("=", "%3D") if ("%" in s or "&" in s or "=" in s) else s


def _unescape(s: str) -> str:
    return s.replace("%3D", "=").replace("%26", "&").replace("%25", "%") if "%" in s else s


def decode_set(value: str) -> dict[str, str]:
    """`x-sidegate-set` back to its headers (a prepared stream's, read by the per-try ext_proc:
    extproc/prepared.py; the try lane's Lua decodes its own)."""
    out: dict[str, str] = {}
    for pair in value.split("&") if value else ():
        k, _, v = pair.partition("=")
        out[_unescape(k)] = _unescape(v)
    return out


def encode_changes(changes: HeaderChanges) -> dict[str, str]:
    """Header changes -> the two answer headers the Lua filter applies (removals first)."""
    out: dict[str, str] = {}
    if changes.set:
        out[TryWire.SET] = "&".join(f"{_escape(k)}={_escape(v)}" for k, v in changes.set.items())
    remove = [h for h in changes.remove if h not in changes.set]
    if remove:
        out[TryWire.REMOVE] = ",".join(remove)
    return out


def _client_api(value: object) -> Api:
    """The client's API as the metadata or a header names it, for its error format (OpenAI's unless
    it says Anthropic or Gemini: a Responses client's errors are OpenAI-shaped)."""
    if value == "anthropic":
        return Api.ANTHROPIC
    return Api.GEMINI if value == "gemini" else Api.OPENAI


def _provider_request(t: ProviderTry, body: bytes) -> tuple[bytes, HeaderChanges]:
    """The try's request for its provider: body and every header change (the body's included)."""
    changes = t.request_headers()
    out, body_changes = t.request_body(body)
    changes.set.update(body_changes.set)
    return out, changes


def _refusal(api: Api, e: Exception) -> Reply:
    """A try refused before the provider, in the client's format (Lua relays it as is), or answered
    by the per-try stage itself (a count's estimate)."""
    if isinstance(e, TryAnswered):
        return e.reply
    if isinstance(e, GatewayError):
        return Reply(e.status, format_error(api, e), dict(_JSON))
    log.error("try lane: request failed", exc_info=e)
    return Reply(500, error_body(api, 500, "Gateway error."), dict(_JSON))


def _failed(api: Api, msg: str) -> Reply:
    """A response the front could not translate: a 502 in the client's format, for the Lua to send."""
    return Reply(200, error_body(api, 502, msg), {TryWire.STATUS: "502", TryWire.SET: "content-type=application%2Fjson"})


async def _post_abandon(host: str, port: int, key: str, retried: bool, token: str) -> None:
    """One `POST /try/abandon` to another worker's front (best effort: expiry settles it anyway)."""
    key = key.replace("\r", "").replace("\n", "")
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2.0)
        writer.write(f"POST {TRY_PREFIX}abandon HTTP/1.1\r\nhost: sidegate-front\r\n{TryWire.KEY}: {key}\r\n{TOKEN_HEADER}: {token}\r\n"
                     f"{TryWire.RETRIED}: {int(retried)}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                     .encode("latin-1", "replace"))  # fmt: skip
        await asyncio.wait_for(reader.read(256), 2.0)
        writer.close()
    except (TimeoutError, OSError):
        log.warning("try lane: could not reach worker port %d to settle an aborted try", port)


class Tries(TtlMap[ProviderTry]):
    """Tries between their request and their response, by a key their worker made up. A try that
    leaves without its response (expired, evicted, drained at shutdown) is settled as aborted."""

    def __init__(self, ttl_s: float, capacity: int = 65536):
        super().__init__(capacity, ttl_s, on_drop=ProviderTry.close)

    def abandon(self, key: str, retried: bool = False) -> None:
        """The request is over (or moved on to its next try: `retried`) without this try's
        response: settle it as aborted (a retried one is left to the next try)."""
        t = self.pop(key)
        if t is not None:
            t.close(retried=retried)


class TryLane:
    """The adapter: the Lua filter's two calls -> :class:`ProviderTry` -> answers."""

    def __init__(self, stage: TryStage, worker: int = 0, front_host: str = "127.0.0.1", front_port: int = 0, token: str = ""):
        self.stage = stage
        self.token = token
        """The internal token, for the abandon calls to the other workers' fronts."""
        self.worker = str(worker)
        self.front_host = front_host
        self.front_port = front_port
        """This worker's front port (worker w listens on front_port - worker + w)."""
        self._tasks: set[asyncio.Task[None]] = set()
        # A try cannot outlive its per-try timeout (the route's timeout may be 0: none).
        longest = max((m.per_try_timeout_s for m in stage.cfg.models.values()), default=60.0)
        self.tries = Tries(ttl_s=longest + 30.0)
        self.new_key = UniqueIds(f"{self.worker}.")
        self._sweeper: asyncio.Task[None] | None = None

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
        self.tries.drain()

    def prepare(self, meta: dict[str, Any], body: bytes, redacted: bytes | None = None,
                restore: dict[str, str] | None = None) -> dict[str, str]:  # fmt: skip
        """The first try, done at check time (answer headers for the front; {} when the Lua must
        call instead: a weighted first group, a key pool, a large body, any error). `redacted` /
        `restore`: the guard feature's rewritten body and restore map, used as they are (the per-try
        redaction a call would do is the same, already done)."""
        cfg = self.stage.cfg
        named, versions = meta.get(ROUTING_VERSION_KEY), self.stage.versions
        if named is not None and versions is not None:  # the routing version Envoy routes this request with
            cfg = versions.pick(int(named)) or cfg
        name = preparable_first_try(cfg, str(meta.get("model", "")), int(meta.get("start", 0)), str(meta.get("pin", "")))
        cred = env_credential(cfg.providers[name]) if name is not None else None
        if name is None or cred is None:
            return {}
        cluster = try_cluster_name(name)
        if redacted is not None:
            meta, body = {**meta, "redact": False, "restore": restore or {}}, redacted
        try:
            t = self.stage.start_try(meta, cluster, 1)
            out, changes = _provider_request(t, body)
            out = ascii_json(out)
        except Exception:  # the /try/request call answers it (in the client's format)
            return {}
        if len(out) > PREPARED_MAX:  # (the try is dropped unregistered: nothing was reserved by it)
            return {}
        changes.set["content-length"] = str(len(out))
        changes.set.pop(cred[0], None)  # the key: the Lua reads it from Envoy's environment
        return {TryWire.BODY: out.decode(), TryWire.PREPARED: cluster, **encode_changes(changes), **self._hold(t)}

    def handle(self, target: str, headers: dict[str, str], body: bytes) -> Reply | None:
        """The answer, or None when a try meets a provider or routing version this process does not
        know yet: the front then awaits :meth:`request_later`."""
        if target.endswith("/request"):
            return self.request(headers, body)
        if target.endswith("/abandon"):  # another worker learnt that this try is over
            self.tries.abandon(headers.get(TryWire.KEY, ""), retried=headers.get(TryWire.RETRIED) == "1")
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
            task = asyncio.get_running_loop().create_task(_post_abandon(self.front_host, port, key, retried, self.token))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def request_later(self, headers: dict[str, str], body: bytes) -> Reply:
        """A try whose provider or routing version is loaded first (contract 2; rare: just after a
        change, on a worker that has not polled it yet)."""
        try:
            meta = orjson.loads(headers.get(FRONT_META_HEADER) or "{}")
        except orjson.JSONDecodeError:
            meta = {}
        if isinstance(meta, dict):
            await self.stage.learn(meta)
        reply = self.request(headers, body, learnt=True)
        assert reply is not None  # (learnt: never deferred again)
        return reply

    def request(self, headers: dict[str, str], body: bytes, learnt: bool = False) -> Reply | None:
        try:
            meta = orjson.loads(headers.get(FRONT_META_HEADER) or "{}")
        except orjson.JSONDecodeError:
            meta = {}
        if not learnt and isinstance(meta, dict) and not self.stage.ready(meta, headers.get(TryWire.CLUSTER, "")):
            return None
        api = _client_api(meta.get("api"))
        if TRACEPARENT in headers:  # Envoy's span of the Lua's call for this try (Envoy tracing)
            set_try_parent(meta, headers[TRACEPARENT])
        previous = headers.get(TryWire.PREVIOUS)
        try:
            t = self.stage.start_try(meta, headers.get(TryWire.CLUSTER, ""), int(headers.get(TryWire.ATTEMPT) or 1))
        except Exception as e:
            if previous:  # this try cannot start: the previous one is the request's last
                self.abandon(previous)
            return _refusal(api, e)
        if previous:  # Envoy retried: the previous try never got its response (per-try timeout)
            self.abandon(previous, retried=True)
        try:
            out, changes = _provider_request(t, body)
        except Exception as e:
            t.close()  # refused before the provider: the reservation is settled (nothing used)
            return _refusal(api, e)
        return Reply(200, out, {**encode_changes(changes), **self._hold(t)})

    def _hold(self, t: ProviderTry) -> dict[str, str]:
        """Keep the try for its response; the answer headers that name it (for the Lua)."""
        key = self.new_key()
        self.tries.put(key, t)
        return {TryWire.WORKER: self.worker, TryWire.KEY: key}

    def response(self, headers: dict[str, str], body: bytes) -> Reply:
        t = self.tries.pop(headers.get(TryWire.KEY, ""))
        if t is None:
            return _failed(_client_api(headers.get(FRONT_API_HEADER)), "Sidegate: this try's state was lost (it expired or the worker restarted).")
        try:
            status = int(headers.get(TryWire.STATUS) or 0)
            provider = {k[len(TryWire.PASSED) :]: v for k, v in headers.items() if k.startswith(TryWire.PASSED)}
            mode, changes = t.response_headers(status, provider)
            out = t.response_chunk(body, True) if mode == "streamed" else t.response_body(body)
        except Exception:
            log.exception("try lane: response failed")
            t.close()
            return _failed(t.inbound, "Gateway error.")
        if t.late_headers:  # (headers only the body told, e.g. Google's retry delay)
            changes.set.update(t.late_headers)
        changes.remove = [h for h in changes.remove if h != "content-length"]  # Lua sets it from the body
        return Reply(200, out, {TryWire.STATUS: str(t.status), **encode_changes(changes)})
