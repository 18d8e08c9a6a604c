"""The console's files and the usage endpoints, on a live admin API over a real Valkey with a seeded ledger."""

from __future__ import annotations

import asyncio
import re
import sys
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import controlplane_helpers as h

from sidegate.admin import usage
from sidegate.admin.api_console import CSP
from sidegate.admin.principal import Principal, Role
from sidegate.features.ledger.ledger import STREAM, LedgerRecord
from sidegate.store.redispy import client

valkey_url = h.valkey_url
admin = h.admin
HOUR = 3600
# Whole hours back from now, so every record sits well inside its hour bucket.
BASE = (int(time.time()) // HOUR - 3) * HOUR


def _records() -> list[LedgerRecord]:
    def rec(at: float, tenant: str, model: str, **kw: object) -> LedgerRecord:
        fields = dict(
            input_tokens=10, output_tokens=5, cost_usd=0.001, status=200, latency_ms=20.0, provider="openai"
        )
        fields.update(kw)
        return LedgerRecord(ts=at, tenant=tenant, model=model, **fields)  # type: ignore[arg-type]

    return [
        rec(BASE + 60, "acme", "gpt-4o-mini", team="ml", user="alice"),
        rec(BASE + 120, "acme", "gpt-4o-mini", team="ml", user="bob", input_tokens=30),
        rec(
            BASE + 180,
            "acme",
            "claude-haiku",
            provider="anthropic",
            status=429,
            output_tokens=0,
            cost_usd=0.0,
        ),
        rec(BASE + HOUR + 60, "globex", "gpt-4o-mini", cost_usd=0.01),
        rec(BASE + 2 * HOUR + 60, "acme", "gpt-4o", aborted=True),
    ]


def _seed(url: str, records: list[LedgerRecord]) -> None:
    async def go() -> None:
        r = client(url, 2.0)
        try:
            await r.delete(STREAM)
            for i, rec in enumerate(records):
                await r.xadd(STREAM, rec.to_fields(), id=f"{int(rec.ts * 1000)}-{i}")
        finally:
            await r.aclose()

    asyncio.run(go())


@pytest.fixture(scope="module")
def seeded(admin: h.Admin, valkey_url: str) -> h.Admin:
    _seed(valkey_url, _records())
    return admin


def _api(a: h.Admin) -> httpx.Client:
    return httpx.Client(base_url=f"{a.base}/admin/v1", headers=a.headers(), timeout=10)


def test_console_files_are_public_with_a_strict_policy(admin: h.Admin) -> None:
    with httpx.Client(base_url=admin.base, timeout=10) as c:
        assert c.get("/console").headers["location"] == "/console/"
        for path, ctype in (("/console/", "text/html"), ("/console/app.js", "text/javascript"),
                            ("/console/app.css", "text/css")):  # fmt: skip
            resp = c.get(path)
            assert resp.status_code == 200, path
            assert resp.headers["content-type"].startswith(ctype)
            assert resp.headers["content-security-policy"] == CSP
            assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP and "http" not in CSP
            assert resp.headers["x-content-type-options"] == "nosniff"
            assert resp.headers["x-frame-options"] == "DENY"
            again = c.get(path, headers={"If-None-Match": resp.headers["etag"]})
            assert again.status_code == 304
        html = c.get("/console/").text
        # No inline script or style, nothing from another origin: the page works offline.
        assert (
            "<script>" not in html
            and "style=" not in html
            and "https://" not in html
            and "http://" not in html
        )
        assert admin.token not in html
        # Only the three files are public; anything else under /console/ needs the token like the API.
        assert c.get("/console/secrets.txt").status_code == 401
        assert c.get("/admin/v1/usage/series").status_code == 401
        assert c.get("/admin/v1/requests/recent").status_code == 401


def test_data_answers_are_not_cached(seeded: h.Admin) -> None:
    with _api(seeded) as c:
        for path in ("/usage/series", "/usage/top", "/requests/recent"):
            resp = c.get(path)
            assert resp.status_code == 200, resp.text
            assert resp.headers["cache-control"] == "no-store"
            assert resp.headers["x-content-type-options"] == "nosniff"


def test_series_sums_per_bucket_and_group(seeded: h.Admin) -> None:
    with _api(seeded) as c:
        s = c.get("/usage/series", params={"from": str(BASE), "bucket": "hour", "group_by": "tenant"}).json()
    assert (
        s["from"] == BASE
        and s["bucket_s"] == HOUR
        and s["buckets"][:3] == [BASE, BASE + HOUR, BASE + 2 * HOUR]
    )
    assert (
        s["records_read"] == 5 and not s["truncated"] and s["complete_from"] is None and not s["range_capped"]
    )
    by = {line["group"]: line for line in s["series"]}
    assert set(by) == {"acme", "globex"}
    assert by["acme"]["requests"][:3] == [3, 0, 1]
    assert by["acme"]["errors"][:3] == [1, 0, 1]  # the 429 and the aborted one
    assert by["acme"]["input_tokens"][:3] == [50, 0, 10]
    assert by["acme"]["output_tokens"][:3] == [10, 0, 5]
    assert by["globex"]["cost_usd"][:3] == [0.0, 0.01, 0.0]
    assert s["series"][0]["group"] == "globex"  # ranked by spend


def test_series_by_team_and_user_are_named_inside_their_tenant(seeded: h.Admin) -> None:
    with _api(seeded) as c:
        teams = c.get(
            "/usage/series", params={"from": str(BASE), "group_by": "team", "tenant": "acme"}
        ).json()
        users = c.get(
            "/usage/series", params={"from": str(BASE), "group_by": "user", "tenant": "acme"}
        ).json()
    assert {line["group"]: sum(line["requests"]) for line in teams["series"]} == {
        "acme/ml": 2,
        "acme/(none)": 2,
    }
    assert {line["group"]: sum(line["requests"]) for line in users["series"]} == {
        "acme/alice": 1, "acme/bob": 1, "acme/(none)": 2,
    }  # fmt: skip
    assert teams["tenant"] == "acme"


def test_top_models_with_error_rates(seeded: h.Admin) -> None:
    with _api(seeded) as c:
        t = c.get("/usage/top", params={"from": str(BASE), "group_by": "model"}).json()
    rows = {r["group"]: r for r in t["rows"]}
    assert t["rows"][0]["group"] == "gpt-4o-mini"
    assert rows["gpt-4o-mini"]["requests"] == 3 and rows["gpt-4o-mini"]["error_rate"] == 0
    assert rows["claude-haiku"]["error_rate"] == 1.0 and rows["gpt-4o"]["errors"] == 1
    assert t["requests"] == 5 and t["errors"] == 2 and t["error_rate"] == 0.4
    assert (
        t["status_classes"]["2xx"] == 3
        and t["status_classes"]["4xx"] == 1
        and t["status_classes"]["aborted"] == 1
    )


def test_recent_tail_with_a_cursor(seeded: h.Admin, valkey_url: str) -> None:
    with _api(seeded) as c:
        first = c.get("/requests/recent", params={"limit": 2}).json()
        assert [r["tenant"] for r in first["requests"]] == ["globex", "acme"]  # the newest two, oldest first
        assert first["cursor"] == first["requests"][-1]["id"] and not first["skipped"]
        assert set(first["requests"][0]) == {"id", *usage.RECENT_FIELDS}
        assert c.get("/requests/recent", params={"after": first["cursor"]}).json()["requests"] == []
        _seed_more(valkey_url)
        new = c.get("/requests/recent", params={"after": first["cursor"], "limit": 1}).json()
        assert [r["model"] for r in new["requests"]] == ["late-2"] and new["skipped"]
        acme = c.get("/requests/recent", params={"tenant": "globex"}).json()
        assert {r["tenant"] for r in acme["requests"]} == {"globex"}
    _seed(valkey_url, _records())


def _seed_more(url: str) -> None:
    async def go() -> None:
        r = client(url, 2.0)
        try:
            for i in (1, 2):
                await r.xadd(
                    STREAM, LedgerRecord(ts=time.time(), tenant="acme", model=f"late-{i}").to_fields()
                )
        finally:
            await r.aclose()

    asyncio.run(go())


@pytest.mark.parametrize(
    "path,params",
    [
        ("/usage/series", {"bucket": "week"}),
        ("/usage/series", {"group_by": "colour"}),
        ("/usage/series", {"from": "yesterday"}),
        ("/usage/series", {"from": "24h\n"}),
        ("/usage/series", {"tenant": "Bad Name!"}),
        ("/usage/top", {"limit": "0"}),
        ("/usage/top", {"limit": "101"}),
        ("/requests/recent", {"after": "nope"}),
        ("/requests/recent", {"limit": "501"}),
    ],
)
def test_bad_parameters_are_refused(seeded: h.Admin, path: str, params: dict[str, str]) -> None:
    with _api(seeded) as c:
        resp = c.get(path, params=params)
    assert resp.status_code == 400, resp.text
    assert set(resp.json()["error"]) == {"code", "message"}


def test_range_is_capped_and_said_so(seeded: h.Admin) -> None:
    with _api(seeded) as c:
        s = c.get("/usage/series", params={"from": "7d", "bucket": "minute"}).json()
        future = c.get("/usage/series", params={"from": "9999999999", "to": "999999w"}).json()
    assert s["range_capped"] and len(s["buckets"]) == usage.MAX_BUCKETS
    assert future["buckets"] == [] and future["series"] == []


def test_reading_is_bounded_newest_first_and_filtered_by_who_sees(valkey_url: str, seeded: h.Admin) -> None:
    async def go() -> None:
        r = client(valkey_url, 2.0)
        try:
            window = usage.Window.of(BASE, time.time(), HOUR)
            owner = Principal("env", Role.OWNER)
            recs, info = await usage.scan(r, owner, None, window, limit=2)
            assert [x.model for x in recs] == ["gpt-4o", "gpt-4o-mini"]  # the newest two
            assert info.truncated and info.complete_from == BASE + HOUR + 60
            viewer = Principal("v", Role.VIEWER, tenant="globex")
            recs, info = await usage.scan(r, viewer, None, window)
            assert {x.tenant for x in recs} == {"globex"} and not info.truncated
            tail = await usage.recent(r, viewer, None, None, 50)
            assert {x["tenant"] for x in tail["requests"]} == {"globex"}
        finally:
            await r.aclose()

    asyncio.run(go())


def test_a_scoped_viewer_sees_only_its_tenant(valkey_url: str, seeded: h.Admin) -> None:
    """The handlers filter by who the caller is: a viewer scoped to globex (set where the admin
    helper's middleware sets it) gets globex's usage only, and a 403 for another tenant's."""
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from sidegate.admin.http import PRINCIPAL
    from sidegate.admin.server import build_app

    @web.middleware
    async def as_viewer(request: web.Request, handler):  # type: ignore[no-untyped-def]
        request[PRINCIPAL] = Principal("token:v", Role.VIEWER, tenant="globex")
        return await handler(request)

    async def go() -> None:
        redis = client(valkey_url, 2.0)
        app = build_app(redis, None)
        app.middlewares.append(as_viewer)
        async with TestClient(TestServer(app)) as c:
            s = await (await c.get("/admin/v1/usage/series", params={"from": str(BASE)})).json()
            assert {line["group"] for line in s["series"]} == {"globex"}
            t = await (await c.get("/admin/v1/usage/top", params={"from": str(BASE)})).json()
            assert t["requests"] == 1
            tail = await (await c.get("/admin/v1/requests/recent")).json()
            assert {r["tenant"] for r in tail["requests"]} == {"globex"}
            for path in ("/admin/v1/usage/series", "/admin/v1/usage/top", "/admin/v1/requests/recent"):
                resp = await c.get(path, params={"tenant": "acme"})
                assert resp.status == 403 and (await resp.json())["error"]["code"] == "forbidden"
            assert (await c.get("/console/")).status == 200
        await redis.aclose()

    asyncio.run(go())


def test_a_scoped_callers_answers_reveal_nothing_of_other_tenants_traffic(
    valkey_url: str, seeded: h.Admin
) -> None:
    """How many records the whole gateway holds, and when the others' requests came, are other
    tenants' business: a viewer scoped to globex reads a count of its own records, and its tail's
    cursor is the store's clock, never another tenant's newer request."""

    async def go() -> None:
        r = client(valkey_url, 2.0)
        try:
            window = usage.Window.of(BASE, time.time(), HOUR)
            viewer = Principal("v", Role.VIEWER, tenant="globex")
            recs, info = await usage.scan(r, viewer, None, window)
            assert len(recs) == 1 and info.records_read == 1  # not the 5 of every tenant
            owner = Principal("env", Role.OWNER)
            _, seen_by_owner = await usage.scan(r, owner, "globex", window)
            assert seen_by_owner.records_read == 5  # an owner is told everything read
            everything = await usage.recent(r, owner, None, None, 50)
            newest = everything["requests"][-1]["id"]
            assert everything["cursor"] == newest and everything["requests"][-1]["tenant"] == "acme"
            tail = await usage.recent(r, viewer, None, None, 50)
            (mine,) = tail["requests"]
            # The cursor moves on by the store's clock, never to acme's newest id (so an idle tenant's
            # poll neither learns when the others' requests came nor looks through them again).
            assert tail["cursor"] != newest and _id(tail["cursor"]) > _id(newest)
            assert re.fullmatch(usage.AFTER_PATTERN, tail["cursor"])  # the API takes it back as `after`
            idle = await usage.recent(r, viewer, None, mine["id"], 50)
            assert idle["requests"] == [] and not idle["skipped"]
            assert idle["cursor"] != newest and _id(idle["cursor"]) > _id(newest)
            await r.xadd(STREAM, LedgerRecord(ts=time.time(), tenant="globex", model="later").to_fields())
            again = await usage.recent(r, viewer, None, idle["cursor"], 50)
            assert [x["model"] for x in again["requests"]] == ["later"]
        finally:
            await r.aclose()

    try:
        asyncio.run(go())
    finally:
        _seed(valkey_url, _records())


def _id(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq)


def test_a_series_and_a_top_list_of_the_same_range_share_one_read(valkey_url: str, seeded: h.Admin) -> None:
    """What the console does on every refresh: both at once, one bounded scan of the ledger."""
    from aiohttp.test_utils import TestClient, TestServer

    from sidegate.admin.server import build_app

    class CountingRedis:
        def __init__(self, real: object) -> None:
            self.real, self.calls = real, 0

        async def xrevrange(self, *args: object, **kwargs: object) -> object:
            self.calls += 1
            await asyncio.sleep(0.2)  # a long scan: the second request arrives while it runs
            return await self.real.xrevrange(*args, **kwargs)  # type: ignore[attr-defined]

        def __getattr__(self, name: str) -> object:
            return getattr(self.real, name)

    async def go() -> None:
        redis = client(valkey_url, 2.0)
        counting = CountingRedis(redis)
        async with TestClient(TestServer(build_app(counting, None))) as c:  # type: ignore[arg-type]
            q = {"from": str(BASE), "bucket": "hour"}
            series, top = await asyncio.gather(
                c.get("/admin/v1/usage/series", params=q), c.get("/admin/v1/usage/top", params=q)
            )
            s, t = await series.json(), await top.json()
            assert counting.calls == 1
            assert sum(sum(line["requests"]) for line in s["series"]) == t["requests"] == 5
            assert (s["from"], s["to"]) == (t["from"], t["to"])
            await c.get("/admin/v1/usage/series", params=q)  # after the first ended: a new read
            assert counting.calls == 2
        await redis.aclose()

    asyncio.run(go())
