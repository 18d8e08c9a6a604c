"""grpc.aio adapter: Envoy `envoy.service.auth.v3.Authorization` around :func:`sidegate.features.auth.decide.decide`."""

from __future__ import annotations

import logging

import grpc
from envoy.service.auth.v3 import external_auth_pb2 as pb
from envoy.service.auth.v3 import external_auth_pb2_grpc as pb_grpc
from envoy.type.v3.http_status_pb2 import HttpStatus
from google.rpc import code_pb2, status_pb2
from redis.asyncio import Redis

from sidegate import metrics
from sidegate.config import SidegateConfig
from sidegate.core.intake import KEY_PARAM, inbound_api, query_key
from sidegate.envoy_pb import authz_header_options, struct, struct_to_dict
from sidegate.errors import Api
from sidegate.features.auth.decide import Allow, Deny, authorize
from sidegate.features.auth.jwt import JwtCallers
from sidegate.features.auth.keycache import KeyCache
from sidegate.features.auth.throttle import FailureThrottle
from sidegate.health import add_health, set_serving
from sidegate.trust import Token, require
from sidegate.wire import CREDENTIAL_HEADERS, JWT_NS

log = logging.getLogger("sidegate.authz")


_OK = status_pb2.Status(code=code_pb2.OK)
_DENIED = status_pb2.Status(code=code_pb2.PERMISSION_DENIED)
_KEY_QUERY = (KEY_PARAM,)


class AuthorizationService(pb_grpc.AuthorizationServicer):
    def __init__(self, cache: KeyCache, token: Token, throttle: FailureThrottle | None = None,
                 jwt: JwtCallers | None = None):  # fmt: skip
        self.cache = cache
        self.token = token
        self.throttle = throttle or FailureThrottle()
        self.jwt = jwt
        """JWT callers (`jwt.providers`): Envoy sends its jwt_authn findings with every check."""

    async def Check(self, request: pb.CheckRequest, context: grpc.aio.ServicerContext) -> pb.CheckResponse:
        await require(self.token, context)  # only Envoy may ask who a key belongs to
        headers = dict(request.attributes.request.http.headers)
        source = request.attributes.source.address.socket_address.address
        found = None
        if self.jwt is not None:
            ns = request.attributes.metadata_context.filter_metadata.get(JWT_NS)
            found = struct_to_dict(ns) if ns is not None else None
        result = authorize(
            headers,
            self.cache.records,
            self.throttle,
            source,
            jwt=self.jwt,
            jwt_found=found,
            org=self.cache.org if self.jwt is not None else None,
        )
        if isinstance(result, Allow):
            path = headers.get(":path", "")
            gemini = inbound_api(path, headers) is Api.GEMINI
            # A Gemini client's `?key=` goes no further than here (nor into the path Envoy logs).
            drop = _KEY_QUERY if gemini and "?" in path and query_key(path) is not None else ()
            identity = {"tenant": result.tenant, "key_id": result.key_id, "models": list(result.models)}
            if result.team:
                identity["team"] = result.team
            if result.user:
                identity["user"] = result.user
            if gemini:  # its key (header or query) is gone past here: the model list's format needs it
                identity["api"] = Api.GEMINI.value
            return pb.CheckResponse(
                status=_OK,
                ok_response=pb.OkHttpResponse(
                    headers_to_remove=CREDENTIAL_HEADERS, query_parameters_to_remove=drop
                ),
                dynamic_metadata=struct(identity),
            )
        metrics.authz_denial(result.reason)
        return _denied(result)


def _denied(result: Deny) -> pb.CheckResponse:
    headers = authz_header_options({"content-type": "application/json", **result.headers})
    return pb.CheckResponse(
        status=_DENIED,
        denied_response=pb.DeniedHttpResponse(
            status=HttpStatus(code=result.status), headers=headers, body=result.body.decode()
        ),
    )


async def serve(
    redis: Redis, host: str, port: int, token: Token, throttle: FailureThrottle | None = None,
    cfg: SidegateConfig | None = None,
) -> tuple[grpc.aio.Server, KeyCache]:  # fmt: skip
    cache = KeyCache(redis)
    await cache.start()
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    jwt = JwtCallers.from_config(cfg.jwt) if cfg is not None else None
    pb_grpc.add_AuthorizationServicer_to_server(AuthorizationService(cache, token, throttle, jwt), server)
    health = add_health(server)
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    await set_serving(health, "envoy.service.auth.v3.Authorization")
    return server, cache
