"""Helpers for the fault-matrix e2e tests (tests/e2e/test_faults_*.py, test_security.py).

Everything here talks to a real `harness.Stack`: SDK clients with bounded timeouts, the quota and
ledger as stored in Valkey, the Prometheus text of extproc, process kill/restart, API-format checks.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any, TypeVar

import anthropic
import httpx
import openai
import orjson
import redis
from harness import Stack
from redis.asyncio import Redis

from sidegate.features.ledger.ledger import LedgerRecord
from sidegate.features.ledger.reading import iter_records
from sidegate.features.quota import QuotaStore
from sidegate.ports import wait_for_port
from sidegate.store import RedisPyStore

T = TypeVar("T")

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"


# -- clients -----------------------------------------------------------------------------------
def oai(stack: Stack, key: str = "acme", timeout: float = 10.0) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url + "/v1", api_key=stack.keys[key].key, max_retries=0, timeout=timeout)


def chat_text(raw: Any, stream: bool) -> str:
    """The answer text of an OpenAI SDK ``with_raw_response`` chat completion, streamed or not."""
    if stream:
        return "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    return raw.parse().choices[0].message.content or ""


def ant(stack: Stack, key: str = "acme", timeout: float = 10.0) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.base_url, api_key=stack.keys[key].key, max_retries=0, timeout=timeout)


def ant_stream(stack: Stack, body: dict[str, Any], timeout: float = 10.0) -> Any:
    """Stream a Messages request with the Anthropic SDK to its final message (raises on errors)."""
    with ant(stack, timeout=timeout).messages.stream(**body) as s:
        return s.get_final_message()


def auth_headers(stack: Stack, api: str, key: str = "acme") -> dict[str, str]:
    secret = stack.keys[key].key
    return {"authorization": f"Bearer {secret}"} if api == "openai" else {"x-api-key": secret}


def body_for(api: str, model: str, text: str = "hello", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    if api == "anthropic":
        body.setdefault("max_tokens", 64)
    return body


def post(stack: Stack, api: str, body: dict[str, Any] | bytes, key: str = "acme", timeout: float = 10.0,
         headers: dict[str, str] | None = None) -> httpx.Response:  # fmt: skip
    """One raw POST to the client-facing endpoint of `api` ("openai" or "anthropic")."""
    path = CHAT if api == "openai" else MESSAGES
    h = {"content-type": "application/json", **auth_headers(stack, api, key), **(headers or {})}
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return httpx.post(stack.base_url + path, content=content, headers=h, timeout=timeout)


# -- API formats -------------------------------------------------------------------------------
def error_message(api: str, resp: httpx.Response) -> str:
    """The error message of `resp`, asserting the body is an error in `api`'s format."""
    doc = resp.json()
    if api == "anthropic":
        assert doc.get("type") == "error" and isinstance(doc.get("error"), dict), resp.text
        assert isinstance(doc["error"].get("type"), str), resp.text
    else:
        assert isinstance(doc.get("error"), dict) and "type" in doc["error"], resp.text
        assert "type" not in doc or doc["type"] != "error", resp.text
    msg = doc["error"].get("message")
    assert isinstance(msg, str), resp.text
    return msg


def sse_events(text: str) -> list[tuple[str | None, str]]:
    """(event name, data) of every SSE event in `text`."""
    out: list[tuple[str | None, str]] = []
    for block in re.split(r"\r?\n\r?\n", text):
        name, data = None, []
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        if data:
            out.append((name, "\n".join(data)))
    return out


def assert_well_formed_stream(api: str, text: str) -> list[Any]:
    """Every event's data is JSON (or OpenAI's `[DONE]`); returns the parsed payloads."""
    payloads = []
    for _, data in sse_events(text):
        if api == "openai" and data == "[DONE]":
            continue
        try:
            payloads.append(orjson.loads(data))
        except orjson.JSONDecodeError:
            raise AssertionError(f"malformed SSE data reached the client: {data[:80]!r}") from None
    return payloads


def is_terminal_error(api: str, payload: Any) -> bool:
    if not isinstance(payload, dict):
        return False
    return payload.get("type") == "error" if api == "anthropic" else isinstance(payload.get("error"), dict)


# -- store: quota, ledger, keys ------------------------------------------------------------------
def sync_redis(stack: Stack) -> redis.Redis:
    assert stack.sup is not None
    return redis.Redis.from_url(stack.sup.redis_url, socket_timeout=2, socket_connect_timeout=2)


def tenant_usage(stack: Stack, tenant: str) -> dict[str, Any]:
    """{requests, tokens, ...} of the `tenant:<t>` scope in the current window (zeros if unused)."""
    assert stack.sup is not None

    q = stack.cfg_data.get("quota", {})  # the stack's window: the keys' buckets follow it
    window = {"window_s": q.get("window_s", 60.0), "buckets": q.get("buckets", 60)}

    async def go() -> dict[str, Any]:
        r = Redis.from_url(stack.sup.redis_url, socket_timeout=2)
        try:
            scopes = (await QuotaStore(RedisPyStore(r), **window).usage(tenant))["scopes"]
            return scopes.get(f"tenant:{tenant}", {"requests": 0, "tokens": 0})
        finally:
            await r.aclose()

    return asyncio.run(go())


def settled_tokens(stack: Stack, tenant: str, quiet_s: float = 0.5, timeout_s: float = 5.0) -> int:
    """The tenant's tokens once nothing moves for `quiet_s` (true-ups are asynchronous)."""
    deadline = time.monotonic() + timeout_s
    last, since = int(tenant_usage(stack, tenant)["tokens"]), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        got = int(tenant_usage(stack, tenant)["tokens"])
        if got != last:
            last, since = got, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
    return last


def reservations(stack: Stack, tenant: str) -> dict[str, str]:
    """Every reservation record of `tenant` -> its value (`settled` once settled)."""
    r = sync_redis(stack)
    try:
        out = {}
        for k in r.scan_iter(match=f"{{sg:{tenant}}}:res:*", count=1000):
            v = r.get(k)
            if v is not None:
                out[k.decode()] = v.decode()
        return out
    finally:
        r.close()


def ledger(stack: Stack) -> list[LedgerRecord]:
    assert stack.sup is not None

    async def go() -> list[LedgerRecord]:
        r = Redis.from_url(stack.sup.redis_url, socket_timeout=2)
        try:
            return [rec async for _, rec in iter_records(r)]
        finally:
            await r.aclose()

    return asyncio.run(go())


# -- metrics -------------------------------------------------------------------------------------
def metrics_text(stack: Stack, service: str = "extproc") -> str:
    assert stack.sup is not None
    svc = stack.sup.cfg.services
    port = svc.metrics_port if service == "extproc" else svc.authz_metrics_port
    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if not m or m.group(1) != name:
            continue
        have = dict(_LABEL.findall(m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


# -- processes -----------------------------------------------------------------------------------
def kill(stack: Stack, name: str, sig: int = signal.SIGKILL) -> None:
    assert stack.sup is not None
    proc = stack.sup.child(name).proc
    assert proc is not None and proc.poll() is None, f"{name} is not running"
    proc.send_signal(sig)
    if sig in (signal.SIGKILL, signal.SIGTERM):
        proc.wait(timeout=10)


def supervise_until_up(stack: Stack, name: str, timeout: float = 15.0) -> None:
    """Run the supervisor's passes (what `sidegate up` does every 0.2 s) until `name` runs and
    listens again: a restart may wait out a back-off, and never blocks a pass."""
    assert stack.sup is not None
    deadline = time.monotonic() + timeout
    while True:
        stack.sup.check()
        c = stack.sup.child(name)
        if c.proc is not None and c.proc.poll() is None and c.listening:
            return
        assert time.monotonic() < deadline, f"{name} did not come back within {timeout}s"
        time.sleep(0.05)


def restart_valkey_same_port(stack: Stack) -> None:
    """Start a new valkey-server with the dead one's command line (same port, same data dir)."""
    assert stack.sup is not None
    child = stack.sup.child("valkey")
    assert child.proc is not None and child.proc.poll() is not None, "valkey is still running"
    out = open(child.log_path, "ab") if child.log_path else subprocess.DEVNULL  # noqa: SIM115
    child.proc = subprocess.Popen(child.cmd, stdout=out, stderr=subprocess.STDOUT)
    wait_for_port("127.0.0.1", child.port, 10.0, child.proc)


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket LISTENing on `port` (from /proc/net/tcp and tcp6)."""
    found: set[str] = set()
    for path, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        if not os.path.exists(path):
            continue
        with open(path) as f:
            next(f)
            for line in f:
                parts = line.split()
                local, state = parts[1], parts[3]
                if state != "0A":  # LISTEN
                    continue
                addr_hex, port_hex = local.split(":")
                if int(port_hex, 16) != port:
                    continue
                found.add(_addr(addr_hex, v6))
    return found


def _addr(h: str, v6: bool) -> str:
    raw = bytes.fromhex(h)
    if not v6:
        return ".".join(str(b) for b in raw[::-1])
    words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
    b = b"".join(words)
    if b[:12] == b"\x00" * 10 + b"\xff\xff":
        return ".".join(str(x) for x in b[12:])
    if b == b"\x00" * 15 + b"\x01":
        return "::1"
    if b == b"\x00" * 16:
        return "::"
    return b.hex()


# -- waiting -------------------------------------------------------------------------------------
def wait_until(fn: Callable[[], T], timeout: float = 5.0, interval: float = 0.05) -> T:
    """Call `fn` until it returns something truthy (returned) or `timeout` passes (last value)."""
    deadline = time.monotonic() + timeout
    value = fn()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = fn()
    return value


def first_ok(stack: Stack, api: str = "openai", model: str = "gpt-4o-mini", timeout: float = 5.0) -> httpx.Response:
    """POST until a 200 (bounded): how the tests wait for a restarted component to be used again."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            r = post(stack, api, body_for(api, model), timeout=5)
            if r.status_code == 200 or time.monotonic() > deadline:
                return r
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def raw_post(stack: Stack, path: str, headers: dict[str, str], body: bytes, *, chunked: bool = False,
             pause_s: float = 0.3, timeout: float = 3.0, read_early: bool = True) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    """POST over a raw socket: headers first, then (after `pause_s`, when Envoy has already asked
    authz and extproc about the headers) the body in 64 KiB pieces. With `read_early` an answer that
    comes while the body is still being written ends the upload (a careful client); without it the
    whole body is written first (what httpx, the SDKs and curl do). Returns (status, headers, body);
    status 0 when nothing came back, or the upload stalled for `timeout`."""
    assert stack.sup is not None
    head = [f"POST {path} HTTP/1.1", "host: gateway", "connection: close"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    head.append("transfer-encoding: chunked" if chunked else f"content-length: {len(body)}")
    got = b""
    with socket.create_connection(("127.0.0.1", stack.sup.cfg.listener.port), timeout=timeout) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        time.sleep(pause_s)
        sock.setblocking(False)
        pieces = [body[i : i + 65536] for i in range(0, len(body), 65536)]
        if chunked:
            pieces = [b"%x\r\n%s\r\n" % (len(p), p) for p in pieces] + [b"0\r\n\r\n"]
        pending = b"".join(pieces)
        stalled_since = time.monotonic()
        while pending:
            if time.monotonic() - stalled_since > timeout:
                return 0, {}, b"upload stalled: the gateway stopped reading"
            try:
                if not read_early:
                    raise BlockingIOError
                got += sock.recv(65536)
                if got:
                    break  # answered before the body was complete
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                break
            try:
                n = sock.send(pending[:65536])
                pending = pending[n:]
                stalled_since = time.monotonic()
            except (BlockingIOError, InterruptedError):
                time.sleep(0.01)
            except OSError:
                break  # closed on us: read what was answered
        sock.setblocking(True)
        sock.settimeout(timeout)
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                got += data
        except OSError:
            pass
    if not got.startswith(b"HTTP/1.1 "):
        return 0, {}, got
    head_raw, _, rest = got.partition(b"\r\n\r\n")
    lines = head_raw.decode(errors="replace").split("\r\n")
    hdrs = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    if hdrs.get("transfer-encoding") == "chunked":
        out, buf = b"", rest
        while buf:
            size_line, _, buf = buf.partition(b"\r\n")
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0:
                break
            out, buf = out + buf[:size], buf[size + 2 :]
        rest = out
    return int(lines[0].split()[1]), hdrs, rest
