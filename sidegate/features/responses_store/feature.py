"""responses_store: the Responses answers the gateway served, kept in the store per tenant, so a
conversation continues with `previous_response_id` on whichever provider serves the next turn
(a fallback included), and `GET` / `DELETE /v1/responses/{id}` (and `/input_items`) answer from
the gateway (no provider call, no quota, no ledger record).

- Continue: a `POST /v1/responses` naming `previous_response_id` gets the kept conversation (its
  input items, then its output items) before its own `input`; the id is removed, so the provider
  sees one self-contained request whatever it speaks. A missing, expired or other tenant's id is
  OpenAI's 404 (`param: previous_response_id`). Instructions are not carried over (OpenAI's rule).
  The feature runs before guard, quota and cache: what they redact, estimate and key on is the
  whole conversation. Behind the HTTP front (which cannot rewrite the body) each try prepends it.
- Keep: unless the request says `store: false`, `store_response` in the request's metadata makes
  its tries collect their client-format answer (the per-try stage's fill mechanism; a stream keeps
  only its last event, `response.completed`); the final successful try hands it over, and the
  conversation with the answer is written under the answer's id with a TTL, by a task.
- Where it lives: the store, key `sgr:v1:<tenant>:<id>`, for `responses.ttl_s` (30 days by
  default) or until deleted; never logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any
from urllib.parse import unquote

import orjson

from sidegate.config import SidegateConfig
from sidegate.core.completion import Completion
from sidegate.core.context import Reply, RequestContext
from sidegate.core.feature import Feature
from sidegate.core.intake import COMPLETIONS, RESPONSES_PATH, STORED_RESPONSE, unknown_path
from sidegate.errors import Api, GatewayError
from sidegate.features.responses_store import conversation as conv
from sidegate.features.responses_store.turns import Turn, Turns
from sidegate.store import Store
from sidegate.translate.base import Usage

log = logging.getLogger("sidegate.responses")

KEEP = "store_response"
"""Metadata: keep this request's answer (also keeps it off the direct lane)."""
TURN = "responses_turn"
"""Metadata: this process's key of the request's :class:`Turn`."""
PREFIX = "responses_prefix"
"""Metadata (HTTP front): each try prepends the earlier conversation itself."""
_JSON = {"content-type": "application/json"}
WRITE_TIMEOUT_S = 5.0


class ResponsesStoreFeature(Feature):
    name = "responses_store"
    endpoints = frozenset({COMPLETIONS, STORED_RESPONSE})
    apis = frozenset({Api.RESPONSES})
    """A chat or Messages completion never meets this feature (not even a no-op step)."""
    fill_key = KEEP
    fill_tail = True

    def __init__(self, cfg: SidegateConfig, store: Store, turns: Turns | None = None):
        self.cfg = cfg
        self.store = store
        self.ttl_s = cfg.responses.ttl_s
        self.max_bytes = cfg.responses.max_bytes
        self.timeout_s = cfg.responses.read_timeout_ms / 1000
        self.body_fixed = cfg.services.front == "http"
        """The HTTP front cannot rewrite the body before the router: the tries prepend."""
        self.turns = turns if turns is not None else Turns()
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def from_config(cls, cfg: SidegateConfig, store: Store | None = None) -> ResponsesStoreFeature | None:
        if store is None or not cfg.responses.store:
            return None
        return cls(cfg, store)

    # -- continuing a conversation ---------------------------------------------------------------
    def prefetch(self, ctx: RequestContext) -> None:
        """The kept answer's GET, sent now (with the previous hook's store work, if any)."""
        if ctx.api is Api.RESPONSES and ctx.endpoint == COMPLETIONS and ctx.tenant:
            prev = ctx.body.get("previous_response_id")
            if conv.valid_id(prev):
                sent = self.store.send_now("GET", conv.store_key(ctx.tenant, prev), timeout_s=self.timeout_s)
                if sent is not None:
                    ctx.prefetched[self.name] = sent

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        if ctx.endpoint == STORED_RESPONSE:
            return await self._stored(ctx)
        if ctx.api is not Api.RESPONSES:  # (the pipeline never asks: `apis`)
            return None
        body = ctx.body
        prev = body.get("previous_response_id")
        keep = body.get("store") is not False
        if prev is None and not keep:
            return None
        earlier: bytes | None = None
        if prev is not None:
            if not conv.valid_id(prev):
                raise GatewayError(400, "Invalid 'previous_response_id': expected a response id.",
                                   param="previous_response_id")  # fmt: skip
            if body.get("conversation") is not None:
                raise GatewayError(400, "'previous_response_id' cannot be used together with 'conversation'.",
                                   param="previous_response_id")  # fmt: skip
            earlier, record = await self._read(ctx.tenant, prev, ctx.prefetched.pop(self.name, None))
            if record is None:
                raise conv.not_found(prev, "previous_response_id")
            body["input"] = [*conv.conversation_so_far(record), *conv.as_items(body.get("input"))]
            del body["previous_response_id"]
            ctx.body_changed = True
        # What the tries and the keeping need, as the bytes already at hand (the kept record as
        # read, the client's body as received): nothing is serialised on the request path, and
        # the guard's redaction (in place, next) does not reach what is kept.
        if keep and len(ctx.raw_body) + len(earlier or b"") > self.max_bytes:
            keep = False  # a record this large would not be kept: hold nothing, ask no try for it
        prefix = earlier if earlier is not None and (keep or self.body_fixed) else None
        if prefix is None and not keep:  # continued on the gRPC front, not kept: nothing to hold
            return None
        key = self.turns.put(Turn(prefix, ctx.raw_body if keep else None, prev))
        if key is not None:
            ctx.meta[TURN] = key
            if prefix is not None and self.body_fixed:
                ctx.meta[PREFIX] = True
        elif self.body_fixed and prev is not None:  # larger than this process holds in flight
            raise GatewayError(413, "The conversation of 'previous_response_id' is too large to continue here.",
                               param="previous_response_id")  # fmt: skip
        if keep:
            ctx.meta[KEEP] = True
        return None

    async def _read(
        self, tenant: str, response_id: str, sent: Awaitable[Any] | None = None
    ) -> tuple[bytes | None, dict[str, Any] | None]:
        """The kept record of `response_id` for `tenant`, raw and parsed ((None, None): none)."""
        try:
            if sent is None:
                sent = self.store.command(
                    "GET", conv.store_key(tenant, response_id), timeout_s=self.timeout_s
                )
            raw = await sent
        except Exception as exc:  # timeout, connection: not a 404 (the answer may well be there)
            log.warning("kept response read failed: %s", type(exc).__name__)
            raise GatewayError(503, "The stored response could not be read; retry.") from None
        if raw is None:
            return None, None
        raw = bytes(raw)
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:  # not a record this gateway wrote: nothing kept there
            log.warning("kept response unreadable: %d bytes", len(raw))
            return None, None
        return (raw, record) if isinstance(record, dict) else (None, None)

    def on_try(self, meta: dict[str, Any], api: Api) -> PrependTry | None:
        if not meta.get(PREFIX):
            return None
        turn = self.turns.get(str(meta.get(TURN, "")))
        return PrependTry(turn.earlier if turn is not None else None)

    # -- keeping the answer ----------------------------------------------------------------------
    def fill_bound(self, meta: dict[str, Any]) -> int:
        return self.max_bytes

    def fill(
        self, meta: dict[str, Any], client_body: dict[str, Any] | None, response: bytes, streamed: bool,
        usage: Usage | None = None,
    ) -> None:  # fmt: skip
        try:
            turn = self.turns.pop(str(meta.get(TURN, "")))
            tenant = str(meta.get("tenant", ""))
            if not tenant:
                return
            answer = conv.answer_of(response, streamed)
            if answer is None:
                return
            task = asyncio.get_running_loop().create_task(self._keep(tenant, answer, turn, client_body))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        except Exception as exc:  # never break the response path
            log.warning("keeping a response failed: %s", type(exc).__name__)  # never the contents

    async def _keep(self, tenant: str, answer: dict[str, Any], turn: Turn | None,
                    client_body: dict[str, Any] | None) -> None:  # fmt: skip
        """The record built and written off the request path (a task: the answer has gone out)."""
        try:
            value = self._record(answer, turn, client_body)
            if value is not None:
                await self._write(conv.store_key(tenant, answer["id"]), value)
        except Exception as exc:  # never an unread task error; never the contents in a log
            log.warning("keeping a response failed: %s", type(exc).__name__)

    def _record(
        self, answer: dict[str, Any], turn: Turn | None, client_body: dict[str, Any] | None
    ) -> bytes | None:
        if turn is not None and turn.body is not None:
            body = orjson.loads(turn.body)
            earlier = conv.conversation_so_far(orjson.loads(turn.earlier)) if turn.earlier is not None else []
            input_items = [*earlier, *conv.as_items(body.get("input"))]
            prev, instructions = turn.previous_id, body.get("instructions")
        elif client_body is not None and "previous_response_id" not in client_body:
            # The turn is in another process (or was dropped): the body this try received.
            input_items = conv.as_items(client_body.get("input"))
            prev, instructions = None, client_body.get("instructions")
        else:  # the earlier conversation is not here: keeping part of it would be wrong
            return None
        value = orjson.dumps(conv.record_of(input_items, answer, prev, instructions))
        if len(value) > self.max_bytes:
            log.info("kept response skipped: %d bytes over responses.max_bytes", len(value))
            return None
        return value

    async def _write(self, key: str, value: bytes) -> None:
        try:
            await self.store.command(
                "SET", key, value, "EX", self.ttl_s, timeout_s=WRITE_TIMEOUT_S, lazy=True
            )
        except Exception as exc:
            log.warning("keeping a response failed: %s", type(exc).__name__)

    def on_complete(self, c: Completion) -> None:
        """A request that ends without an answer to keep (its final try failed, or the gateway
        answered it) lets go of its turn; a kept one's fill (right after this) pops it."""
        key = c.meta.get(TURN)
        if key is None or not c.final:
            return
        if not (c.meta.get(KEEP) and 200 <= c.status < 300 and c.attempt > 0 and not c.aborted):
            self.turns.pop(str(key))

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait (bounded) for the writes under way (shutdown, tests)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout_s)

    async def close(self) -> None:
        await self.drain()

    # -- GET / DELETE /v1/responses/{id} ---------------------------------------------------------
    async def _stored(self, ctx: RequestContext) -> Reply:
        if not ctx.tenant:
            raise GatewayError(401, "Missing tenant identity.", code="invalid_api_key")
        path, _, query = ctx.path.partition("?")
        response_id, _, sub = path[len(RESPONSES_PATH) + 1 :].partition("/")
        response_id = unquote(response_id)
        if sub not in ("", "input_items"):
            return unknown_path(ctx.path, ctx.headers)
        allowed = ("GET",) if sub else ("GET", "DELETE")
        if ctx.method not in allowed:
            raise GatewayError(405, f"Method {ctx.method} not allowed on {path}; use {' or '.join(allowed)}.")
        if "stream=true" in query.lower():  # replaying a background response's events: not kept
            raise GatewayError(400, "Streaming a stored response is not supported: retrieve it without 'stream'.",
                               param="stream")  # fmt: skip
        if not conv.valid_id(response_id):
            raise conv.not_found(response_id[: conv.MAX_ID_CHARS])
        if ctx.method == "DELETE":
            try:
                gone = await self.store.command(
                    "DEL", conv.store_key(ctx.tenant, response_id), timeout_s=self.timeout_s
                )
            except Exception as exc:
                log.warning("kept response delete failed: %s", type(exc).__name__)
                raise GatewayError(503, "The stored response could not be deleted; retry.") from None
            if not gone:
                raise conv.not_found(response_id)
            return Reply(200, orjson.dumps(conv.deleted(response_id)), dict(_JSON))
        _, record = await self._read(ctx.tenant, response_id)
        if record is None or not isinstance(record.get("response"), dict):
            raise conv.not_found(response_id)
        body = conv.input_items_page(record, response_id, query) if sub else record["response"]
        return Reply(200, orjson.dumps(body), dict(_JSON))


class PrependTry:
    """Behind the HTTP front, one try's body: the earlier conversation before the client's input
    (a :class:`sidegate.core.feature.TryHook`). A body without the id was rewritten already (the
    try lane's first try uses the gateway's body), so it is left alone."""

    def __init__(self, earlier: bytes | None):
        self.earlier = earlier

    def request(self, body: dict[str, Any]) -> None:
        if "previous_response_id" not in body:
            return
        if self.earlier is None:  # the turn is held by another worker of this front
            raise GatewayError(
                503,
                "The conversation of 'previous_response_id' is not available to this gateway worker; retry.",
            )
        record = orjson.loads(self.earlier)
        body["input"] = [*conv.conversation_so_far(record), *conv.as_items(body.get("input"))]
        del body["previous_response_id"]

    def response(self, body: bytes) -> bytes:
        return body

    def stream(self, chunk: bytes, end: bool) -> bytes:
        return chunk
