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

from sidegate.admin import api_console, api_core, api_org, api_usage
from sidegate.admin import controlplane as cp
from sidegate.admin.http import CP_KEY, PRINCIPAL, SPEC_KEY, error, respond
from sidegate.admin.openapi import PREFIX, spec
from sidegate.admin.principal import OWNER_ENV

log = logging.getLogger("sidegate.admin")

PUBLIC_PATHS = frozenset({f"{PREFIX}/healthz", f"{PREFIX}/openapi.json"})
"""Public too: the console's static files (api_console.is_console_path; its data needs the token)."""
MAX_BODY_BYTES = 64 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "replace")).digest()


def _auth_middleware(token: str | None) -> Any:
    want = _digest(token) if token else None

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if want is None or request.path in PUBLIC_PATHS or api_console.is_console_path(request.path):
            request[PRINCIPAL] = OWNER_ENV
            return await handler(request)
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        # Compare digests in constant time (equal lengths, so no length leak either).
        ok = hmac.compare_digest(_digest(value.strip()), want)
        if not (ok and scheme.lower() == "bearer"):
            return error(401, "unauthorized", "missing or wrong admin token", {"WWW-Authenticate": "Bearer"})
        request[PRINCIPAL] = OWNER_ENV
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


async def healthz(request: web.Request) -> web.Response:
    try:
        await request.app[CP_KEY].redis.ping()
    except (RedisError, OSError):
        return respond({"status": "unavailable", "store": "unreachable"}, 503)
    return respond({"status": "ok", "store": "ok"})


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


def build_app(redis: Redis, token: str | None) -> web.Application:
    """The admin application; ``token=None`` disables authentication (only for --insecure-no-auth)."""
    _install_log_filter()
    app = web.Application(middlewares=[_errors, _auth_middleware(token)], client_max_size=MAX_BODY_BYTES)
    app[CP_KEY] = cp.ControlPlane(redis)
    app[SPEC_KEY] = orjson.dumps(spec())
    r = app.router
    r.add_get(f"{PREFIX}/healthz", healthz)
    r.add_get(f"{PREFIX}/openapi.json", openapi)
    # Each module adds its endpoints (and states who may call them: sidegate/admin/http.py require).
    for module in (api_core, api_org, api_usage, api_console):
        module.register(app)
    return app


async def serve(redis: Redis, host: str, port: int, token: str | None) -> web.AppRunner:
    """Start listening; the caller awaits its own stop condition, then ``await runner.cleanup()``."""
    runner = web.AppRunner(build_app(redis, token), handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def run_until_signal(redis: Redis, host: str, port: int, token: str | None) -> None:
    runner = await serve(redis, host, port, token)
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
