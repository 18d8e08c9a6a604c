"""The admin HTTP API (aiohttp): the control-plane operations behind a bearer admin token.

Errors are JSON ``{"error": {"code", "message"}}``. Request bodies are JSON objects (the
Content-Type is not checked, so a plain ``curl -d`` works). Bodies, keys and the token are never logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import signal
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from sidegate.admin import (
    api_audit,
    api_console,
    api_core,
    api_org,
    api_routing,
    api_tokens,
    api_usage,
    tokens,
)
from sidegate.admin import controlplane as cp
from sidegate.admin.http import CP_KEY, PRINCIPAL, SPEC_KEY, Forbidden, error, respond
from sidegate.admin.oidc import OidcRejected, OidcVerifier, looks_like_jwt
from sidegate.admin.openapi import PREFIX, spec
from sidegate.admin.policy import EVERY_TENANT, UNDECLARED, policy_of, public, resolve_tenant
from sidegate.admin.principal import OWNER_ENV, Principal
from sidegate.config.admin import AdminConfig
from sidegate.config.root import SidegateConfig
from sidegate.store.layout import migrate_layout

log = logging.getLogger("sidegate.admin")

MAX_BODY_BYTES = 64 * 1024
OIDC_KEY: web.AppKey[OidcVerifier | None] = web.AppKey("oidc", object)  # type: ignore[arg-type]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "replace")).digest()


def _unauthorized(message: str = "missing or wrong admin token") -> web.Response:
    return error(401, "unauthorized", message, {"WWW-Authenticate": "Bearer"})


async def _authenticate(request: web.Request, want: bytes) -> Principal | web.Response:
    """Who presents the request's bearer credential: the env token's holder (bootstrap owner), a
    stored admin token's principal, or an OIDC user; else a 401 (403/503 for a JWT that is valid
    but grants no role / whose issuer's keys cannot be fetched)."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    value = value.strip()
    # Compare digests in constant time (equal lengths, so no length leak either); always computed.
    is_env = hmac.compare_digest(_digest(value), want)
    if scheme.lower() != "bearer" or not value:
        return _unauthorized()
    if is_env:
        return OWNER_ENV
    if value.startswith(tokens.PREFIX):
        who = await tokens.authenticate(request.app[CP_KEY].redis, value, request.app[CP_KEY].clock())
        return who if who is not None else _unauthorized()
    verifier = request.app[OIDC_KEY]
    if verifier is not None and looks_like_jwt(value):
        try:
            return await verifier.principal(value)
        except OidcRejected as exc:
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
            return error(exc.status, exc.code, str(exc), headers)
    return _unauthorized()


def _auth_middleware(token: str | None) -> Any:
    want = _digest(token) if token else None

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        match = request.match_info
        policy = policy_of(request.app, match.route)
        if policy is not None and policy.public:
            return await handler(request)
        who = OWNER_ENV if want is None else await _authenticate(request, want)
        if isinstance(who, web.Response):
            return who
        request[PRINCIPAL] = who
        if match.http_exception is not None:
            return await handler(request)  # 404/405, only once authenticated (routes are not revealed)
        if policy is None:  # fail closed: only owners (who may do everything anyway) pass
            log.warning(
                "no access policy declared for %s %s: owners only", request.method, match.route.resource
            )
            policy = UNDECLARED
        tenant = await resolve_tenant(request, policy.tenant)
        if policy.action is not None and not who.may(policy.action, tenant):
            where = " on every tenant" if tenant == EVERY_TENANT else f" on tenant {tenant}" if tenant else ""
            raise Forbidden(f"the {who.role.value} role may not {policy.action}{where}")
        return await handler(request)

    return auth


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except cp.ControlPlaneError as exc:
        return error(exc.status, exc.code, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        code = HTTPStatus(exc.status).phrase.lower().replace(" ", "_").replace("-", "_")
        return error(exc.status, code, exc.reason, headers)
    except (RedisError, OSError) as exc:
        log.warning("store error on %s %s: %s", request.method, request.path, type(exc).__name__)
        return error(503, "store_unavailable", "the store is unreachable; try again")
    except Exception:
        log.exception("admin API bug on %s %s", request.method, request.path)
        return error(500, "internal_error", "internal error")


# ---- handlers ----


@public
async def healthz(request: web.Request) -> web.Response:
    try:
        await request.app[CP_KEY].redis.ping()
    except (RedisError, OSError):
        return respond({"status": "unavailable", "store": "unreachable"}, 503)
    return respond({"status": "ok", "store": "ok"})


@public
async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[SPEC_KEY], content_type="application/json")


class _NoRawRequestLines(logging.Filter):
    """aiohttp logs a malformed request with the offending raw bytes (maybe an Authorization header): drop them."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg, record.args, record.exc_info, record.exc_text = (
                "rejected a malformed HTTP request (%s)",
                (type(exc).__name__,),
                None,
                None,
            )
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def _install_log_filter() -> None:
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _NoRawRequestLines) for f in server_log.filters):
        server_log.addFilter(_NoRawRequestLines())


def build_app(
    redis: Redis,
    token: str | None,
    settings: AdminConfig | None = None,
    oidc: OidcVerifier | None = None,
    config: SidegateConfig | None = None,
) -> web.Application:
    """The admin application; ``token=None`` disables authentication (only for --insecure-no-auth).
    ``settings.oidc`` enables OIDC sign-in (``oidc``: a ready verifier, for tests). ``config``: the
    process's configuration file, inside which routing documents are validated."""
    _install_log_filter()
    app = web.Application(middlewares=[_errors, _auth_middleware(token)], client_max_size=MAX_BODY_BYTES)
    app[CP_KEY] = cp.ControlPlane(redis)
    if oidc is None and settings is not None and settings.oidc is not None:
        oidc = OidcVerifier(settings.oidc)
    app[OIDC_KEY] = oidc
    if oidc is not None:
        verifier = oidc

        async def start(_: web.Application) -> None:
            await verifier.start()

        async def stop(_: web.Application) -> None:
            await verifier.close()

        app.on_startup.append(start)
        app.on_cleanup.append(stop)
    app[SPEC_KEY] = orjson.dumps(spec())
    if config is not None:
        app[api_routing.BASE_KEY] = config
    r = app.router
    r.add_get(f"{PREFIX}/healthz", healthz)
    r.add_get(f"{PREFIX}/openapi.json", openapi)
    # Each module adds its endpoints (and states who may call them: sidegate/admin/http.py require).
    for module in (api_core, api_org, api_tokens, api_audit, api_usage, api_routing, api_console):
        module.register(app)
    return app


async def serve(
    redis: Redis,
    host: str,
    port: int,
    token: str | None,
    settings: AdminConfig | None = None,
    config: SidegateConfig | None = None,
) -> web.AppRunner:
    """Start listening; the caller awaits its own stop condition, then ``await runner.cleanup()``."""
    runner = web.AppRunner(build_app(redis, token, settings, config=config), handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def run_until_signal(
    redis: Redis,
    host: str,
    port: int,
    token: str | None,
    settings: AdminConfig | None = None,
    config: SidegateConfig | None = None,
) -> None:
    try:
        await migrate_layout(redis)  # a store written before the config keys' {sg} tag
    except (RedisError, OSError) as exc:  # the API still starts, answering 503 until the store is back
        log.warning("store layout not checked (%s): the next process to start with the store up copies it", type(exc).__name__)
    runner = await serve(redis, host, port, token, settings, config)
    log.info(
        "admin API listening on http://%s:%d%s (auth: %s)", host, port, PREFIX, "token" if token else "NONE"
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await redis.aclose()
