"""Fault matrix, store rows: Valkey killed, hung or wiped under load, for `store.fail_mode` open and closed.

One stack per fail mode (module fixture parametrized). Recovery is always without restarting Sidegate.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from fault_helpers import (
    ant,
    body_for,
    first_ok,
    kill,
    metric_sum,
    metrics_text,
    oai,
    post,
    reservations,
    restart_valkey_same_port,
    supervise_until_up,
    sync_redis,
    tenant_usage,
    wait_until,
)
from harness import Stack

pytestmark = pytest.mark.e2e
TPM = 7_777_777  # the gateway's x-ratelimit-limit-tokens (the fake provider sends 30000000)
USAGE = {"prompt_tokens": 10, "completion_tokens": 5}


@pytest.fixture(scope="module", params=["open", "closed"])
def stack(request, tmp_path_factory, fake_openai, fake_anthropic) -> Iterator[Stack]:
    extra = {
        "store": {"fail_mode": request.param},
        # These rows pin every request's own reservation record through the outage (leases would
        # admit some requests with no record of their own: tests/e2e/test_quota_lease.py).
        "quota": {"lease": {"enabled": False}},
        "defaults": {"guard": None},
        "tenants": {"acme": {"quota": {"limits": {"tpm": TPM}}}},
    }
    s = Stack(tmp_path_factory.mktemp(f"store-{request.param}"), fake_openai.url, fake_anthropic.url, extra=extra)
    s.start()
    yield s
    s.stop()


def fail_mode(stack: Stack) -> str:
    assert stack.sup is not None
    return stack.sup.cfg.store.fail_mode


@dataclass
class Result:
    started: float
    status: int
    latency: float
    limit_tokens: str | None
    body: dict[str, Any] = field(default_factory=dict)


class Load:
    """`workers` threads sending OpenAI requests back to back until stopped (bounded by `max_s`)."""

    def __init__(self, stack: Stack, workers: int = 4, max_s: float = 20.0):
        self.stack = stack
        self.results: list[Result] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._deadline = time.monotonic() + max_s
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(workers)]

    def _run(self) -> None:
        with httpx.Client(timeout=5) as c:
            h = {"authorization": f"Bearer {self.stack.keys['acme'].key}"}
            while not self._stop.is_set() and time.monotonic() < self._deadline:
                t = time.monotonic()
                try:
                    r = c.post(self.stack.base_url + "/v1/chat/completions", headers=h,
                               json=body_for("openai", "gpt-4o-mini", max_tokens=1000))  # fmt: skip
                except httpx.HTTPError as e:
                    self.errors.append(e)
                    continue
                body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
                self.results.append(Result(t, r.status_code, time.monotonic() - t,
                                           r.headers.get("x-ratelimit-limit-tokens"), body))  # fmt: skip

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def between(self, a: float, b: float) -> list[Result]:
        return [r for r in self.results if a <= r.started and r.started + r.latency <= b]


def _assert_outage_answers(stack: Stack, during: list[Result]) -> None:
    assert during, "no request completed during the outage"
    if fail_mode(stack) == "open":
        assert all(r.status == 200 for r in during), [r.status for r in during]
        # Degraded: admitted without the store, so no gateway quota headers.
        assert any(r.limit_tokens != str(TPM) for r in during)
    else:
        assert all(r.status == 503 for r in during), [r.status for r in during]
        assert all(r.body["error"]["code"] == "quota_store_unavailable" for r in during)


def _assert_closed_formats(stack: Stack) -> None:
    """Fail closed: the 503 is in each client's own API format, through the official SDKs."""
    with pytest.raises(openai.InternalServerError) as e1:
        oai(stack, timeout=5).chat.completions.create(**body_for("openai", "gpt-4o-mini"))
    assert e1.value.status_code == 503 and e1.value.response.headers["retry-after"] == "1"
    with pytest.raises(anthropic.APIStatusError) as e2:
        ant(stack, timeout=5).messages.create(**body_for("anthropic", "claude-haiku"))
    assert e2.value.status_code == 503 and e2.value.body["type"] == "error"


@pytest.mark.alone  # bounds a duration
def test_store_killed_under_load_then_restarted(stack, fake_openai):
    """Valkey dies under load (kill -9) and comes back on the same port from its last snapshot."""
    fake_openai.set_default({"usage": USAGE, "delay_s": 0.05})
    errors_before = metric_sum(metrics_text(stack), "sidegate_store_errors_total", component="extproc", op="quota")
    r = sync_redis(stack)
    r.save()  # a store with persistence: the restart below reloads this snapshot
    r.close()
    with Load(stack) as load:
        time.sleep(0.5)
        kill(stack, "valkey")
        t_kill = time.monotonic()
        time.sleep(1.5)
        if fail_mode(stack) == "closed":
            _assert_closed_formats(stack)
        t_restart = time.monotonic()
        restart_valkey_same_port(stack)
        time.sleep(1.5)
    t_end = time.monotonic()
    assert not load.errors, load.errors[:3]
    assert max(r.latency for r in load.results) < 2.5  # nothing hangs on a dead store
    _assert_outage_answers(stack, load.between(t_kill + 0.2, t_restart))
    after = load.between(t_restart + 1.0, t_end)
    assert after and all(r.status == 200 and r.limit_tokens == str(TPM) for r in after), [
        (r.status, r.limit_tokens) for r in after
    ]
    if fail_mode(stack) == "open":
        errors_after = metric_sum(metrics_text(stack), "sidegate_store_errors_total", component="extproc", op="quota")
        assert errors_after > errors_before


def test_accounting_exact_after_store_recovery(stack, fake_openai):
    """After the restart: usage counts exactly the provider's tokens, every new reservation settles."""
    fake_openai.set_default({"usage": USAGE})
    # Let the previous test's background work land first (settles, and cancels of reserve calls
    # that failed during the outage are retried until the store answers): wait for a stable set.
    known = reservations(stack, "acme")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = reservations(stack, "acme")
        if now == known and set(now.values()) <= {"settled", "cancelled"}:
            break
        known = now
    before = tenant_usage(stack, "acme")
    known = set(known)
    for _ in range(5):
        assert post(stack, "openai", body_for("openai", "gpt-4o-mini", max_tokens=1000)).status_code == 200
    want = before["tokens"] + 5 * 15
    assert wait_until(lambda: tenant_usage(stack, "acme")["tokens"] == want, 5), (tenant_usage(stack, "acme"), want)
    assert tenant_usage(stack, "acme")["requests"] == before["requests"] + 5
    new = {k: v for k, v in reservations(stack, "acme").items() if k not in known}
    assert len(new) == 5 and set(new.values()) == {"settled"}, new


def _burst(stack: Stack, n: int) -> list[int]:
    """`n` concurrent requests (each holds its own store connection in extproc's pool while it runs)."""
    codes: list[int] = []

    def one() -> None:
        codes.append(post(stack, "openai", body_for("openai", "gpt-4o-mini", max_tokens=1000), timeout=5).status_code)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return codes


@pytest.fixture(scope="module")
def hang_episode(stack, fake_openai) -> dict[str, Any]:
    """Valkey frozen (SIGSTOP) for 2 s under load, then resumed: one episode shared by two tests.

    A burst just before the freeze leaves several idle connections in extproc's pool; the burst
    during the freeze sends its reserve calls over them, so the frozen store has commands queued."""
    fake_openai.set_default({"usage": USAGE, "delay_s": 0.3})
    proc = stack.sup.child("valkey").proc
    known = set(reservations(stack, "acme"))
    try:
        with Load(stack) as load:
            _burst(stack, 8)
            proc.send_signal(signal.SIGSTOP)
            t_stop = time.monotonic()
            frozen_codes = _burst(stack, 8)
            time.sleep(max(0.0, 2.0 - (time.monotonic() - t_stop)))
            proc.send_signal(signal.SIGCONT)
            t_cont = time.monotonic()
            time.sleep(1.5)
    finally:
        proc.send_signal(signal.SIGCONT)
        fake_openai.set_default(None)
    time.sleep(1.0)  # every settle has run (or failed) by now
    return {"load": load, "t_stop": t_stop, "t_cont": t_cont, "known": known, "frozen_codes": frozen_codes}


@pytest.mark.alone  # bounds a duration
def test_store_hung_under_load_is_bounded(stack, hang_episode):
    load: Load = hang_episode["load"]
    assert not load.errors, load.errors[:3]
    # Each store call is bounded by quota.op_timeout_s (0.5 s): a frozen store never stalls a request.
    assert max(r.latency for r in load.results) < 0.3 + 1.5
    _assert_outage_answers(stack, load.between(hang_episode["t_stop"] + 0.1, hang_episode["t_cont"]))
    assert set(hang_episode["frozen_codes"]) == {200 if fail_mode(stack) == "open" else 503}
    after = load.between(hang_episode["t_cont"] + 0.5, time.monotonic())
    assert after and all(r.status == 200 for r in after)


def test_no_reservation_leaked_after_store_hang(stack, hang_episode):
    """A reserve the client gave up on (store frozen) may still run when the store resumes: the
    gateway cancels it in the background (a tombstone if it has not run yet), so every reservation
    ends `settled` or `cancelled` and nothing is charged twice."""

    def leaked() -> list[str]:
        new = {k: v for k, v in reservations(stack, "acme").items() if k not in hang_episode["known"]}
        return [k for k, v in new.items() if v not in ("settled", "cancelled")]

    assert wait_until(lambda: not leaked(), 10, 0.25), f"{len(leaked())} reservations never settled or cancelled"


def test_store_restarted_empty_keeps_serving(stack):
    """`sidegate up` restarts a crashed embedded Valkey (Supervisor.check); clients must not notice."""
    child = stack.sup.child("valkey")
    data_dir = Path(child.cmd[child.cmd.index("--dir") + 1])
    try:
        kill(stack, "valkey")
        (data_dir / "dump.rdb").unlink(missing_ok=True)  # the snapshot an earlier test saved: start empty
        shutil.rmtree(data_dir / "appendonlydir", ignore_errors=True)  # and its append-only file
        supervise_until_up(stack, "valkey")  # what `sidegate up` runs every 0.2 s
        first_ok(stack, timeout=3.0)
        time.sleep(1.0)  # authz and extproc poll the store every 0.25 s: they have seen the new one
        codes = [post(stack, "openai", body_for("openai", "gpt-4o-mini")).status_code for _ in range(3)]
        assert codes == [200, 200, 200], codes
    finally:
        if stack.sup.child("valkey").proc.poll() is not None:
            supervise_until_up(stack, "valkey")
        asyncio.run(stack.sup._seed())  # leave the stack usable whatever happened
        first_ok(stack, timeout=3.0)
