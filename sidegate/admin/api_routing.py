"""The admin API's routing endpoints: the routing document (providers, models, prices, default
policies) as versioned documents (``/admin/v1/routing``, ``/models``, ``/providers``, ``/prices``).

Only owners change it; any role with a global scope reads it; a tenant-scoped role sees nothing
of it (403), since it is shared by every tenant (``policy.EVERY``). Every change is validated inside
the process's own configuration file and answers ``{"version": N}``; a refused one answers 400
``invalid_config`` with the ``problems`` (their locations in the document) and stores nothing.
Bodies are never logged (a refused provider may carry what its author thought was a secret).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from sidegate.admin import controlplane as cp
from sidegate.admin.controlplane.routing import (
    MAX_INT,
    InvalidConfig,
    RoutingPlane,
    check_model_name,
    check_provider_name,
)
from sidegate.admin.http import CP_KEY, body, json_object, principal, respond
from sidegate.admin.openapi import PREFIX
from sidegate.admin.policy import EVERY, guard
from sidegate.config.root import SidegateConfig

log = logging.getLogger("sidegate.admin")

BASE_KEY: web.AppKey[SidegateConfig] = web.AppKey("routing_base", SidegateConfig)
"""The process's configuration file, inside which every routing document is validated (absent:
an empty one, for an admin API started without ``-c``)."""
_BARE = SidegateConfig(providers={}, models={})
Handler = Callable[[web.Request], Awaitable[web.Response]]
_SECTIONS = {"models": check_model_name, "providers": check_provider_name, "prices": check_model_name}


def _plane(request: web.Request) -> RoutingPlane:
    base = request.app.get(BASE_KEY, _BARE)
    ctl = request.app[CP_KEY]
    return RoutingPlane(ctl.redis, base, principal(request), ctl.clock)


def _refusals(handler: Handler) -> Handler:
    """A refused document answers with its problems (the shared error middleware only knows
    code and message)."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except InvalidConfig as exc:
            err = {"code": exc.code, "message": "the routing document is invalid", "problems": exc.problems}
            return respond({"error": err}, 400)

    return wrapped


def _int(value: Any, what: str, minimum: int = 0) -> int:
    """A whole number (JSON may spell one ``7.0``) from ``minimum`` to 2**53 - 1."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise cp.Invalid(f"{what} must be a whole number")
    try:
        n = int(value)
    except ValueError:
        raise cp.Invalid(f"{what} must be a whole number") from None
    if not minimum <= n <= MAX_INT:
        raise cp.Invalid(f"{what} must be a whole number from {minimum} to {MAX_INT}")
    return n


def _expect(request: web.Request) -> int | None:
    raw = request.query.get("expect_version")
    return None if raw is None else _int(raw, "expect_version")


def _changed(what: str, version: int) -> web.Response:
    log.info("routing document: %s -> version %d", what, version)
    return respond({"version": version})


def _name(request: web.Request, section: str) -> str:
    return _SECTIONS[section](request.match_info["name"])


# the whole document


@guard("read", EVERY)
async def get_routing(request: web.Request) -> web.Response:
    n, doc = await _plane(request).current()
    return respond({"version": n, "doc": doc})


@guard("owner", EVERY)
@_refusals
async def put_routing(request: web.Request) -> web.Response:
    data = await body(request, True, ("doc", "message", "expect_version"))
    if "doc" not in data:
        raise cp.Invalid("doc is required: the whole routing document")
    message = data.get("message", "")
    if not isinstance(message, str) or len(message) > 500:
        raise cp.Invalid("message must be a string of at most 500 characters")
    expect = _int(data["expect_version"], "expect_version") if "expect_version" in data else None
    return _changed("put", await _plane(request).put_doc(data["doc"], message, expect))


@guard("read", EVERY)
async def get_history(request: web.Request) -> web.Response:
    limit = _int(request.query.get("limit", "20"), "limit", 1)
    return respond({"history": await _plane(request).history(limit)})


@guard("read", EVERY)
async def get_version(request: web.Request) -> web.Response:
    n = _int(request.match_info["n"], "version", 1)
    return respond({"version": n, "doc": await _plane(request).version_at(n)})


@guard("owner", EVERY)
@_refusals
async def rollback(request: web.Request) -> web.Response:
    data = await body(request, False, ("to",))
    to = _int(data["to"], "to", 1) if "to" in data else None
    new, target = await _plane(request).rollback(to)
    log.info("routing document: rolled back to version %d -> version %d", target, new)
    return respond({"version": new, "to": target})


# one entry: models, providers, prices


def _section(section: str) -> tuple[Handler, Handler, Handler, Handler]:
    """(list, get, put, delete) of one section's entries."""
    kind = section[:-1]

    @guard("read", EVERY)
    async def list_all(request: web.Request) -> web.Response:
        n, entries = await _plane(request).section(section)
        return respond({"version": n, section: entries})

    @guard("read", EVERY)
    async def get_one(request: web.Request) -> web.Response:
        name = _name(request, section)
        n, value = await _plane(request).entry(section, name)
        return respond({"version": n, "name": name, kind: value})

    @guard("owner", EVERY)
    @_refusals
    async def put_one(request: web.Request) -> web.Response:
        name = _name(request, section)
        value = await json_object(request)
        return _changed(
            f"{kind} {name} set", await _plane(request).put_entry(section, name, value, _expect(request))
        )

    @guard("owner", EVERY)
    @_refusals
    async def delete_one(request: web.Request) -> web.Response:
        name = _name(request, section)
        return _changed(
            f"{kind} {name} deleted", await _plane(request).delete_entry(section, name, _expect(request))
        )

    for fn, verb in ((list_all, "list"), (get_one, "get"), (put_one, "put"), (delete_one, "delete")):
        fn.__name__ = fn.__qualname__ = f"{verb}_{kind}"
    return list_all, get_one, put_one, delete_one


@guard("owner", EVERY)
@_refusals
async def put_prices(request: web.Request) -> web.Response:
    prices = await json_object(request)
    return _changed("price table set", await _plane(request).put_prices(prices, _expect(request)))


def register(app: web.Application) -> None:
    r = app.router
    r.add_get(f"{PREFIX}/routing", get_routing)
    r.add_put(f"{PREFIX}/routing", put_routing)
    r.add_get(f"{PREFIX}/routing/history", get_history)
    r.add_get(f"{PREFIX}/routing/versions/{{n}}", get_version)
    r.add_post(f"{PREFIX}/routing/rollback", rollback)
    for section in ("models", "providers"):
        list_all, get_one, put_one, delete_one = _section(section)
        r.add_get(f"{PREFIX}/{section}", list_all)
        r.add_get(f"{PREFIX}/{section}/{{name}}", get_one)
        r.add_put(f"{PREFIX}/{section}/{{name}}", put_one)
        r.add_delete(f"{PREFIX}/{section}/{{name}}", delete_one)
    list_prices, _, put_price, delete_price = _section("prices")
    r.add_get(f"{PREFIX}/prices", list_prices)
    r.add_put(f"{PREFIX}/prices", put_prices)
    r.add_put(f"{PREFIX}/prices/{{name}}", put_price)
    r.add_delete(f"{PREFIX}/prices/{{name}}", delete_price)
