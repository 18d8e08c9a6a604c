"""sidegate.store.lean.LeanStore against real servers: replies in order under auto-pipelining, redis-py's
error classes, NOSCRIPT reloads, timeouts (the caller's and the client's own per-command limits)
that leave the connection in step, restarts."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from quota_helpers import SERVER_KINDS, running_server
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from sidegate.features.quota import QuotaStore
from sidegate.store import LeanStore, LuaScript, client


def _run(url: str, body: Callable[[LeanStore], Awaitable[None]], **kw: Any) -> None:
    """`body(client)` on a fresh client for `url`, closed afterwards whatever happens."""

    async def go() -> None:
        c = LeanStore.from_url(url, client(url), **kw)
        assert c is not None
        try:
            await body(c)
        finally:
            await c.aclose()

    asyncio.run(go())


def test_from_url_takes_plain_urls_only():
    from redis.asyncio import Redis

    r = Redis()  # connects on its first command only
    c = LeanStore.from_url("redis://:s3cr%40t@10.0.0.1:6380/2", r)
    assert c is not None and (c.host, c.port, c.password, c.db) == ("10.0.0.1", 6380, "s3cr@t", 2)
    assert LeanStore.from_url("redis://h", r) is not None
    for url in ("rediss://h:6379/0", "unix:///tmp/r.sock", "redis://h/0?socket_timeout=1", "redis://h/x"):
        assert LeanStore.from_url(url, r) is None, url


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_pipelined_replies_stay_in_order(kind: str) -> None:
    async def body(c: LeanStore) -> None:
        await asyncio.gather(*(c.command("SET", f"k{i}", i) for i in range(500)))
        got = await asyncio.gather(*(c.command("GET", f"k{i}") for i in range(500)))
        assert got == [str(i).encode() for i in range(500)]
        with pytest.raises(ResponseError):
            await c.command("INCR", "no", "such", "arity")
        assert await c.command("PING") == b"PONG"  # still in step after an error reply

    with running_server(kind) as srv:
        _run(srv.url, body)


def test_lazy_writes_leave_with_the_next_waited_command_or_soon_after() -> None:
    """A lazy write (cache fill, ledger record) is not sent on its own while a command someone
    waits on follows: both leave in one write, in order. Alone, it is sent within LAZY_S."""
    from sidegate.store.lean import LAZY_S

    async def body(c: LeanStore) -> None:
        await c.command("PING")
        loop = asyncio.get_running_loop()
        writes: list[bytes] = []
        transport = c._proto.transport  # type: ignore[union-attr]
        real = transport.write

        def spy(data: bytes) -> None:
            writes.append(data)
            real(data)

        transport.write = spy  # type: ignore[method-assign]
        fill = asyncio.ensure_future(c.command("SET", "lazy:k", "v", lazy=True))
        await asyncio.sleep(0)
        assert writes == []  # waiting for company
        assert await c.command("GET", "lazy:k") == b"v"  # sent after the SET, in one write
        assert len(writes) == 1 and writes[0].index(b"SET") < writes[0].index(b"GET")
        assert await fill == b"OK"
        t0 = loop.time()
        assert await c.command("SET", "lazy:k2", "w", lazy=True) == b"OK"  # alone: soon
        assert loop.time() - t0 < LAZY_S + 0.5 and len(writes) == 2

    with running_server("valkey") as srv:
        _run(srv.url, body)


def test_noscript_and_script_reload() -> None:
    async def body(c: LeanStore) -> None:
        script = LuaScript("t", "return ARGV[1] + 1")
        with pytest.raises(NoScriptError):
            await c.command("EVALSHA", script.sha, 0, 1)
        assert await c.run_script(script, [], [41]) == 42  # reloads on NOSCRIPT
        assert script.reloads == 1

    with running_server("valkey") as srv:
        _run(srv.url, body)


def test_timeout_keeps_the_connection_in_step_and_restart_reconnects() -> None:
    with running_server("valkey") as srv:

        async def body(c: LeanStore) -> None:
            await c.command("SET", "a", "1")
            srv.freeze()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await c.command("GET", "a")
            srv.thaw()
            assert await c.command("GET", "a") == b"1"  # the late reply was consumed, not handed here
            srv.restart()
            with pytest.raises(RedisConnectionError):
                for _ in range(20):  # the first call after the restart may still be on the old socket
                    await c.command("PING")
                    await asyncio.sleep(0.05)
            assert await c.command("PING") == b"PONG"
            srv.stop()
            with pytest.raises(RedisConnectionError):
                await c.command("PING")

        _run(srv.url, body, connect_timeout_s=0.5)


def test_time_limits_per_command_fail_only_the_late_ones() -> None:
    """`timeout_s`: one watchdog for the connection; each command fails at its own limit (a short
    limit behind a long one too), the others still get their replies, the connection stays in step."""
    with running_server("valkey") as srv:

        async def body(c: LeanStore) -> None:
            await c.command("SET", "a", "1")
            loop = asyncio.get_running_loop()
            srv.freeze()
            started = loop.time()
            long = asyncio.ensure_future(c.command("GET", "a", timeout_s=5.0))
            short = asyncio.ensure_future(c.command("GET", "a", timeout_s=0.2))
            with pytest.raises(TimeoutError):
                await short
            assert 0.15 < loop.time() - started < 1.5
            assert not long.done()
            srv.thaw()
            assert await long == b"1"
            assert await c.command("GET", "a", timeout_s=1.0) == b"1"  # in step
            srv.freeze()
            with pytest.raises(TimeoutError):
                await c.command("EVALSHA", "0" * 40, 0, timeout_s=0.1)
            srv.thaw()
            assert await c.command("PING", timeout_s=1.0) == b"PONG"

        _run(srv.url, body)


def test_a_stuck_connection_is_dropped_and_the_next_command_reconnects() -> None:
    """Unanswered past its limit + `stuck_after_s`: the connection is dropped (no growing backlog
    on a frozen or half-open store); a script reload on NOSCRIPT stays within the call's limit."""
    with running_server("valkey") as srv:

        async def body(c: LeanStore) -> None:
            c.stuck_after_s = 0.3
            assert await c.command("PING", timeout_s=1.0) == b"PONG"
            srv.freeze()
            with pytest.raises(TimeoutError):
                await c.command("GET", "a", timeout_s=0.1)
            await asyncio.sleep(0.6)
            assert c._proto is None and not c._pending and not c._deadlines
            srv.thaw()
            assert await c.command("PING", timeout_s=1.0) == b"PONG"  # a new connection
            script = LuaScript("t2", "return ARGV[1] * 2")
            await c.command("SCRIPT", "FLUSH")
            assert await c.run_script(script, [], [21], timeout_s=1.0) == 42 and script.reloads == 1
            srv.freeze()
            started = asyncio.get_running_loop().time()
            with pytest.raises(TimeoutError):
                await c.run_script(script, [], [1], timeout_s=0.2)
            assert asyncio.get_running_loop().time() - started < 1.0
            srv.thaw()

        _run(srv.url, body)


def test_quota_store_on_the_fast_client_admits_and_settles() -> None:
    with running_server("valkey") as srv:

        async def body(c: LeanStore) -> None:
            from sidegate.features.quota import Limits, Scope

            store = QuotaStore(c, window_s=60.0, buckets=60)
            scope = [Scope("tenant:t", Limits(tpm=100))]
            first = await store.reserve("t", scope, 60, "r1")
            second = await store.reserve("t", scope, 60, "r2")
            assert first.admitted and not second.admitted
            assert first.reservation is not None
            assert await store.settle(first.reservation, 10, 0.0) == "settled"
            assert (await store.usage("t"))["scopes"]["tenant:t"]["tokens"] == 10

        _run(srv.url, body)
