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

from sidegate.admin import controlplane as cp
from sidegate.admin.openapi import PREFIX, spec

log = logging.getLogger("sidegate.admin")

PUBLIC_PATHS = frozenset({f"{PREFIX}/healthz", f"{PREFIX}/openapi.json"})
MAX_BODY_BYTES = 64 * 1024
CP_KEY: web.AppKey[cp.ControlPlane] = web.AppKey("controlplane", cp.ControlPlane)
SPEC_KEY: web.AppKey[bytes] = web.AppKey("spec", bytes)
_HEADERS = {"Cache-Control": "no-store"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _respond(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data),
        status=status,
        content_type="application/json",
        headers={**_HEADERS, **(headers or {})},
    )


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return _respond({"error": {"code": code, "message": message}}, status, headers)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "replace")).digest()


def _auth_middleware(token: str | None) -> Any:
    want = _digest(token) if token else None

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if want is None or request.path in PUBLIC_PATHS:
            return await handler(request)
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        # Compare digests in constant time (equal lengths, so no length leak either).
        ok = hmac.compare_digest(_digest(value.strip()), want)
        if not (ok and scheme.lower() == "bearer"):
            return error(401, "unauthorized", "missing or wrong admin token", {"WWW-Authenticate": "Bearer"})
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


async def _body(request: web.Request, required: bool, allowed: tuple[str, ...]) -> dict[str, Any]:
    raw = await request.read()  # aiohttp answers 413 past client_max_size
    if not raw.strip():
        if required:
            raise cp.Invalid("a JSON object body is required")
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise cp.Invalid("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise cp.Invalid("the body must be a JSON object")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise cp.Invalid(f"unknown field(s): {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    return data


def _key_id(request: web.Request) -> str:
    return cp.check_key_id(request.match_info["key_id"])


def _tenant(request: web.Request) -> str:
    return cp.check_tenant(request.match_info["name"])


# ---- handlers ----


async def healthz(request: web.Request) -> web.Response:
    try:
        await request.app[CP_KEY].redis.ping()
    except (RedisError, OSError):
        return _respond({"status": "unavailable", "store": "unreachable"}, 503)
    return _respond({"status": "ok", "store": "ok"})


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[SPEC_KEY], content_type="application/json")


async def list_keys(request: web.Request) -> web.Response:
    tenant = request.query.get("tenant")
    infos = await request.app[CP_KEY].list_keys(tenant)
    return _respond({"keys": [i.to_dict() for i in infos]})


async def create_key(request: web.Request) -> web.Response:
    data = await _body(request, True, ("tenant", "models", "expires_at"))
    if "tenant" not in data:
        raise cp.Invalid("tenant is required")
    key, info = await request.app[CP_KEY].create_key(
        data["tenant"], data.get("models", ["*"]), data.get("expires_at")
    )
    log.info("created key %s for tenant %s", info.id, info.tenant)
    return _respond({"key": key, "record": info.to_dict()}, 201)


async def get_key(request: web.Request) -> web.Response:
    return _respond((await request.app[CP_KEY].get_key(_key_id(request))).to_dict())


async def revoke_key(request: web.Request) -> web.Response:
    info = await request.app[CP_KEY].revoke_key(_key_id(request))
    log.info("revoked key %s", info.id)
    return _respond(info.to_dict())


async def rotate_key(request: web.Request) -> web.Response:
    kid = _key_id(request)
    data = await _body(request, False, ("overlap_s", "expires_at"))
    rot = await request.app[CP_KEY].rotate_key(
        kid, data.get("overlap_s", cp.DEFAULT_OVERLAP_S), data.get("expires_at")
    )
    log.info("rotated key %s -> %s", rot.old.id, rot.new.id)
    return _respond({"key": rot.key, "record": rot.new.to_dict(), "previous": rot.old.to_dict()}, 201)


async def list_tenants(request: web.Request) -> web.Response:
    return _respond({"tenants": [t.to_dict() for t in await request.app[CP_KEY].list_tenants()]})


async def get_tenant(request: web.Request) -> web.Response:
    return _respond((await request.app[CP_KEY].get_tenant(_tenant(request))).to_dict())


async def put_tenant(request: web.Request) -> web.Response:
    name = _tenant(request)
    data = await _body(request, False, ("limits",))
    limits = cp.check_limits(data["limits"]) if "limits" in data else None
    info, created = await request.app[CP_KEY].create_tenant(name, limits)
    log.info("%s tenant %s", "created" if created else "updated", name)
    return _respond(info.to_dict(), 201 if created else 200)


async def delete_tenant(request: web.Request) -> web.Response:
    name = _tenant(request)
    revoked = await request.app[CP_KEY].delete_tenant(name)
    log.info("deleted tenant %s (%d keys revoked)", name, revoked)
    return _respond({"name": name, "revoked_keys": revoked})


async def put_limits(request: web.Request) -> web.Response:
    name = _tenant(request)
    limits = cp.check_limits(await _body(request, True, cp.LIMIT_FIELDS))
    info = await request.app[CP_KEY].set_limits(name, limits)
    log.info("set limits of tenant %s", name)
    return _respond(info.to_dict())


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
    r.add_get(f"{PREFIX}/keys", list_keys)
    r.add_post(f"{PREFIX}/keys", create_key)
    r.add_get(f"{PREFIX}/keys/{{key_id}}", get_key)
    r.add_post(f"{PREFIX}/keys/{{key_id}}/revoke", revoke_key)
    r.add_post(f"{PREFIX}/keys/{{key_id}}/rotate", rotate_key)
    r.add_get(f"{PREFIX}/tenants", list_tenants)
    r.add_get(f"{PREFIX}/tenants/{{name}}", get_tenant)
    r.add_put(f"{PREFIX}/tenants/{{name}}", put_tenant)
    r.add_delete(f"{PREFIX}/tenants/{{name}}", delete_tenant)
    r.add_put(f"{PREFIX}/tenants/{{name}}/limits", put_limits)
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
