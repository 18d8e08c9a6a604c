"""The admin API's usage endpoints (what the console charts): spend and tokens over time, the top
groups with their error rates, and a tail of recent requests (metadata only), all read from the
ledger stream by :mod:`sidegate.admin.usage` with bounded work.

Every answer covers only the tenants the caller sees (a tenant-scoped admin or viewer: theirs).
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from aiohttp import web

from sidegate.admin import controlplane as cp
from sidegate.admin import usage
from sidegate.admin.http import CP_KEY, require, respond
from sidegate.admin.openapi import PREFIX
from sidegate.admin.policy import guard, query
from sidegate.admin.principal import Principal

Scan = tuple[list[Any], usage.Scan]
INFLIGHT: web.AppKey[dict[tuple[Any, ...], asyncio.Future[Scan]]] = web.AppKey("usage_inflight", dict)
"""Scans under way, by what they read: the console asks for a series and a top list of the same range
at once, and they share one read of the ledger instead of doing the bounded work twice."""

# fullmatch + ASCII: a trailing newline or a non-ASCII digit is refused, as the OpenAPI patterns say.
_TIME = re.compile(usage.TIME_PATTERN, re.ASCII)
_AFTER = re.compile(usage.AFTER_PATTERN, re.ASCII)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _when(request: web.Request, name: str, default: str | None, now: float) -> float:
    text = request.query.get(name, default)
    if text is None:
        return now
    if not _TIME.fullmatch(text):
        raise cp.Invalid(
            f"{name} must be Unix seconds or a duration back from now (90m, 24h, 7d), not {text!r}"
        )
    if text[-1] in _UNIT_S:
        return now - float(text[:-1]) * _UNIT_S[text[-1]]
    return min(float(text), now)


def _choice(request: web.Request, name: str, choices: tuple[str, ...], default: str) -> str:
    value = request.query.get(name, default)
    if value not in choices:
        raise cp.Invalid(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


def _int(request: web.Request, name: str, default: int, most: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not re.fullmatch(r"\d{1,6}", text, re.ASCII) or not 1 <= int(text) <= most:
        raise cp.Invalid(f"{name} must be an integer from 1 to {most}, not {text!r}")
    return int(text)


def _tenant(request: web.Request) -> str | None:
    name = request.query.get("tenant")
    return None if name is None else cp.check_tenant(name)


async def _scan(request: web.Request, who: Principal, tenant: str | None, window: usage.Window) -> Scan:
    """usage.scan, joined by any identical scan already running (same range, tenant and caller
    scope); never cached past its end, so an answer is never older than its request."""
    inflight = request.app[INFLIGHT]
    key = (window.start, window.end, tenant, who.id, who.role, who.tenant)
    task = inflight.get(key)
    if task is None:
        task = asyncio.ensure_future(usage.scan(request.app[CP_KEY].redis, who, tenant, window))
        inflight[key] = task
        task.add_done_callback(lambda _: inflight.pop(key, None))
    # shield: a client that goes away does not cancel the read another is waiting for.
    return await asyncio.shield(task)


def _range(request: web.Request) -> tuple[float, float]:
    now = time.time()
    return _when(request, "from", usage.DEFAULT_FROM, now), _when(request, "to", None, now)


@guard("read", query("tenant"))
async def usage_series(request: web.Request) -> web.Response:
    tenant = _tenant(request)
    who = require(request, "read", tenant)
    bucket = _choice(request, "bucket", tuple(usage.BUCKETS), "hour")
    window = usage.Window.of(*_range(request), usage.BUCKETS[bucket])
    group_by = _choice(request, "group_by", usage.GROUP_BYS, "tenant")
    records, info = await _scan(request, who, tenant, window)
    series = usage.Series(window, group_by)
    series.add_all(records)
    return respond({**series.to_dict(), "tenant": tenant, **info.to_dict()})


@guard("read", query("tenant"))
async def usage_top(request: web.Request) -> web.Response:
    tenant = _tenant(request)
    who = require(request, "read", tenant)
    if "bucket" in request.query:  # the same window as a series of that bucket (they share one read)
        window = usage.Window.of(
            *_range(request), usage.BUCKETS[_choice(request, "bucket", tuple(usage.BUCKETS), "")]
        )
    else:  # minute buckets keep the window close to the range asked (rounded out to whole buckets)
        window = usage.Window.of(*_range(request), 60, usage.TOP_MAX_RANGE_S // 60)
    group_by = _choice(request, "group_by", usage.GROUP_BYS, "model")
    limit = _int(request, "limit", 10, usage.TOP_MAX)
    records, info = await _scan(request, who, tenant, window)
    answer = usage.top((r for r in records if window.index(r.ts) is not None), group_by, limit)
    return respond(
        {**answer, "from": window.start, "to": window.end, "range_capped": window.range_capped,
         "tenant": tenant, **info.to_dict()}
    )  # fmt: skip


@guard("read", query("tenant"))
async def requests_recent(request: web.Request) -> web.Response:
    tenant = _tenant(request)
    who = require(request, "read", tenant)
    limit = _int(request, "limit", 50, usage.RECENT_MAX)
    after = request.query.get("after")
    if after is not None and not _AFTER.fullmatch(after):
        raise cp.Invalid(f"after must be a ledger stream id like 1700000000000-0 (a cursor), not {after!r}")
    answer = await usage.recent(request.app[CP_KEY].redis, who, tenant, after, limit)
    return respond({**answer, "tenant": tenant})


def register(app: web.Application) -> None:
    app[INFLIGHT] = {}
    r = app.router
    r.add_get(f"{PREFIX}/usage/series", usage_series)
    r.add_get(f"{PREFIX}/usage/top", usage_top)
    r.add_get(f"{PREFIX}/requests/recent", requests_recent)
