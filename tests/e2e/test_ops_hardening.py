"""Process and connection hardening (issue 21, ops): the supervisor restarts a child however often it
crashes over time, quota counters survive a restart of the embedded store, Envoy bounds and times
out idle client connections, a provider stalling mid-stream is cut by the per-try idle timeout
(and its usage settled), and `sidegate up` starts without Envoy's work-in-progress notices."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
import yaml
from fault_helpers import (
    body_for,
    first_ok,
    kill,
    ledger,
    metric_sum,
    metrics_text,
    oai,
    post,
    reservations,
    supervise_until_up,
    wait_until,
)

from sidegate.ports import free_port

pytestmark = pytest.mark.e2e
MAX_CONNECTIONS = 12
IDLE_S = 3.0
STALL_IDLE_S = 1.0
RPM = 4
STACK_EXTRA = {
    "listener": {"max_connections": MAX_CONNECTIONS, "idle_timeout_s": IDLE_S},
    "services": {"restart_healthy_s": 1.0, "restart_backoff_max_s": 1.0},
    "models": {"gpt-4o": {"routes": [{"provider": "openai", "model": "gpt-4o-2024-08-06"}], "per_try_idle_timeout_s": STALL_IDLE_S}},
    "quota": {"lease": {"enabled": False}},  # a reservation per request: the stall test reads it
    "tenants": {"acme": {"quota": {"limits": {"tpm": 10**8}}}, "globex": {"quota": {"limits": {"rpm": RPM}}}},
    "defaults": {"guard": None},
}


def _healthy_period(stack, name: str) -> None:
    """Run the supervisor's passes until `name` has stayed up past `restart_healthy_s`."""
    c = stack.sup.child(name)
    wait_until(lambda: (stack.sup.check(), c.state.in_a_row == 0)[1], timeout=10, interval=0.1)


def test_child_killed_more_than_six_times_with_healthy_periods_keeps_serving(stack):
    """The old supervisor gave up for good at the sixth crash over its whole life; now the count
    starts over after each healthy period and the gateway serves after every restart."""
    before = metric_sum(metrics_text(stack), "sidegate_supervisor_restarts_total", child="extproc")
    for i in range(8):
        kill(stack, "extproc")
        supervise_until_up(stack, "extproc")
        r = first_ok(stack, timeout=10)
        assert r.status_code == 200, (i, r.status_code, r.text[:200])
        _healthy_period(stack, "extproc")
    st = stack.sup.child("extproc").state
    assert st.total >= 8 and not st.crash_looping(stack.sup.policy)
    after = metric_sum(metrics_text(stack), "sidegate_supervisor_restarts_total", child="extproc")
    assert after - before == 8, (before, after)
    assert metric_sum(metrics_text(stack), "sidegate_supervisor_crash_looping", child="extproc") == 0


def test_envoy_killed_repeatedly_comes_back(stack):
    for _ in range(3):
        kill(stack, "envoy")
        supervise_until_up(stack, "envoy")
        assert first_ok(stack, timeout=10).status_code == 200
    _healthy_period(stack, "envoy")


def test_quota_counters_survive_an_embedded_store_restart(stack):
    """`rpm: 4` used up, the embedded Valkey killed (kill -9) and restarted by the supervisor: its
    append-only file brings the counter back, so the next request is still 429."""
    codes = [post(stack, "openai", body_for("openai", "gpt-4o-mini"), key="globex").status_code for _ in range(RPM)]
    assert codes == [200] * RPM, codes
    assert post(stack, "openai", body_for("openai", "gpt-4o-mini"), key="globex").status_code == 429
    time.sleep(1.2)  # appendfsync everysec: the last second of writes is what a crash may lose
    kill(stack, "valkey")
    supervise_until_up(stack, "valkey")
    time.sleep(1.0)  # extproc and authz reconnect (they poll the store every 0.25 s)
    after = [post(stack, "openai", body_for("openai", "gpt-4o-mini"), key="globex") for _ in range(3)]
    assert [r.status_code for r in after] == [429, 429, 429], [(r.status_code, r.text[:200]) for r in after]
    assert first_ok(stack, timeout=5).status_code == 200  # the other tenant is served (its key came back too)


def _connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    s.setblocking(False)
    return s


def _closed(s: socket.socket) -> bool:
    """The server closed (or reset) this connection: readable with nothing to read."""
    if not select.select([s], [], [], 0)[0]:
        return False
    try:
        return s.recv(1) == b""
    except (ConnectionResetError, BlockingIOError):
        return True


def test_connections_beyond_the_limit_are_refused_and_idle_ones_closed(stack):
    port = stack.sup.cfg.listener.port
    extra = 6
    socks = [_connect(port) for _ in range(MAX_CONNECTIONS + extra)]
    try:
        time.sleep(0.5)  # well inside the idle timeout: only the connections over the cap are gone
        closed = [_closed(s) for s in socks]
        assert sum(closed) >= extra, closed
        assert not any(closed[: MAX_CONNECTIONS - 2]), closed  # those under the cap are kept
        deadline = time.monotonic() + IDLE_S + 3.0
        while time.monotonic() < deadline and not all(closed):
            time.sleep(0.1)
            closed = [c or _closed(s) for c, s in zip(closed, socks, strict=True)]
        assert all(closed), closed  # idle ones closed after listener.idle_timeout_s
    finally:
        for s in socks:
            s.close()
    assert first_ok(stack, timeout=5).status_code == 200


def test_provider_stalling_mid_stream_is_cut_within_the_idle_timeout(stack, fake_openai):
    """The provider sends two events and then nothing: the per-try idle timeout (1 s here) resets
    the stream, the client's stream ends (truncated: an SDK error), and the reservation is settled."""
    known = set(reservations(stack, "acme"))
    records = len(ledger(stack))
    fake_openai.script([{"stall_after_chunks": 2, "chunks": 10, "hang_max_s": 30}])
    got, failed = 0, None
    start = time.monotonic()
    try:
        stream = oai(stack, timeout=30).chat.completions.create(**body_for("openai", "gpt-4o"), stream=True)
        for _ in stream:
            got += 1
    except (openai.APIError, httpx.HTTPError) as e:
        failed = e
    took = time.monotonic() - start
    assert got >= 1 and failed is not None, (got, failed, took)
    # Cut by Envoy, not by the client giving up (its 30 s timeout) nor the 300 s route timeout.
    assert not isinstance(failed, (openai.APITimeoutError, httpx.TimeoutException)), repr(failed)
    assert took < 20.0, took

    def open_reservations() -> list[str]:
        return [v for k, v in reservations(stack, "acme").items() if k not in known and v not in ("settled", "cancelled")]

    assert wait_until(lambda: not open_reservations() and len(ledger(stack)) > records, 10, 0.2), open_reservations()
    new = ledger(stack)[records:]
    assert any(r.model == "gpt-4o" and r.stream and r.aborted for r in new), new  # recorded as cut short
    fake_openai.script([])
    assert first_ok(stack, timeout=5).status_code == 200


def _demo_config(tmp_path: Path) -> Path:
    cfg = {
        "listener": {"port": free_port(), "admin_port": free_port()},
        "services": {"authz_port": free_port(), "extproc_port": free_port(), "metrics_port": 0, "authz_metrics_port": 0,
                     "admin_port": free_port(), "front_port": free_port()},
        "providers": {"openai": {"api": "openai", "base_url": "http://127.0.0.1:9", "api_key_env": "E2E_UP_KEY"}},
        "models": {"gpt-4o-mini": {"routes": [{"provider": "openai"}]}},
    }  # fmt: skip
    path = tmp_path / "up.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_sidegate_up_output_has_no_work_in_progress_notices(tmp_path):
    """A newcomer's first minute: `sidegate up` prints "Sidegate is up" without Envoy's ~20
    work-in-progress proto notices, nor its warning that nothing bounds downstream connections."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDEGATE_")}
    env["E2E_UP_KEY"] = "sk-test"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sidegate.cli", "up", "-c", str(_demo_config(tmp_path))],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
    )  # fmt: skip
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(lines) < 500:
            if not select.select([proc.stdout], [], [], 1.0)[0]:
                if proc.poll() is not None:
                    break
                continue
            line = proc.stdout.readline().decode(errors="replace")
            if not line:
                break
            lines.append(line)
            if "Sidegate is up" in line:
                break
        time.sleep(1.0)  # anything Envoy prints just after it is ready
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate(timeout=10)
    lines += out.decode(errors="replace").splitlines()
    text = "".join(lines)
    assert "Sidegate is up" in text, text[-3000:]
    assert "work-in-progress" not in text, text[-3000:]
    assert "no configured limit to the number of allowed active downstream connections" not in text, text[-3000:]
    assert "envoy up" in text  # the relay still carries the supervisor's own and Envoy's other lines
