"""grpc.aio adapter: Envoy `envoy.service.auth.v3.Authorization` around :func:`authz.decide.decide`."""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
from envoy.service.auth.v3 import external_auth_pb2 as pb
from envoy.service.auth.v3 import external_auth_pb2_grpc as pb_grpc
from envoy.type.v3.http_status_pb2 import HttpStatus
from google.rpc import code_pb2, status_pb2
from redis.asyncio import Redis

from authz.decide import CREDENTIAL_HEADERS, Allow, Deny, authorize
from authz.throttle import FailureThrottle
from sidegate import keystore, metrics
from sidegate.envoy_pb import authz_header_options, struct
from sidegate.health import add_health, set_serving
from sidegate.keystore import KeyRecord
from sidegate.trust import Token, require

log = logging.getLogger("sidegate.authz")


class KeyCache:
    """Local copy of the key records, reloaded when the store's version counter moves.

    A store outage keeps the last records for `max_stale_s` (auth stays up); after that every key
    is refused until the store answers again (fail closed: a revoked key must not live forever).
    """

    def __init__(self, redis: Redis, poll_s: float = 0.25, max_stale_s: float = 300.0):
        self.redis = redis
        self.poll_s = poll_s
        self.max_stale_s = max_stale_s
        self.records: dict[str, KeyRecord] = {}
        self.version = -1
        self.fresh_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._warned = False

    async def refresh(self) -> None:
        version = int(await self.redis.get(keystore.VERSION) or 0)
        if version != self.version:
            self.version, self.records = await keystore.load_all(self.redis)
        self.fresh_at = time.monotonic()
        if self._warned:
            log.warning("key store reachable again")
            self._warned = False

    async def _loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # store down: serve from cache for a bounded time
                metrics.store_error("authz", "keys")
                if not self._warned:
                    log.warning("key store unreachable (%s); serving cached keys", type(exc).__name__)
                    self._warned = True
                if time.monotonic() - self.fresh_at > self.max_stale_s and self.records:
                    log.error("key cache older than %.0fs: refusing all keys until the store is back", self.max_stale_s)
                    self.records = {}
                    self.version = -1
            await asyncio.sleep(self.poll_s)

    async def start(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                await self.refresh()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()


_OK = status_pb2.Status(code=code_pb2.OK)
_DENIED = status_pb2.Status(code=code_pb2.PERMISSION_DENIED)


class AuthorizationService(pb_grpc.AuthorizationServicer):
    def __init__(self, cache: KeyCache, token: Token, throttle: FailureThrottle | None = None):
        self.cache = cache
        self.token = token
        self.throttle = throttle or FailureThrottle()

    async def Check(self, request: pb.CheckRequest, context: grpc.aio.ServicerContext) -> pb.CheckResponse:
        await require(self.token, context)  # only Envoy may ask who a key belongs to
        headers = dict(request.attributes.request.http.headers)
        source = request.attributes.source.address.socket_address.address
        result = authorize(headers, self.cache.records, self.throttle, source)
        if isinstance(result, Allow):
            return pb.CheckResponse(
                status=_OK,
                ok_response=pb.OkHttpResponse(headers_to_remove=CREDENTIAL_HEADERS),
                dynamic_metadata=struct(
                    {"tenant": result.tenant, "key_id": result.key_id, "models": list(result.models)}
                ),
            )
        metrics.authz_denial(result.reason)
        return _denied(result)


def _denied(result: Deny) -> pb.CheckResponse:
    headers = authz_header_options({"content-type": "application/json", **result.headers})
    return pb.CheckResponse(
        status=_DENIED,
        denied_response=pb.DeniedHttpResponse(status=HttpStatus(code=result.status), headers=headers, body=result.body.decode()),
    )


async def serve(
    redis: Redis, host: str, port: int, token: Token, throttle: FailureThrottle | None = None
) -> tuple[grpc.aio.Server, KeyCache]:
    cache = KeyCache(redis)
    await cache.start()
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_AuthorizationServicer_to_server(AuthorizationService(cache, token, throttle), server)
    health = add_health(server)
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    await set_serving(health, "envoy.service.auth.v3.Authorization")
    return server, cache
