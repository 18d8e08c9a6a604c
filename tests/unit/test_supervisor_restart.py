"""`sidegate up`'s restart policy: exponential back-off, a count that starts over after a healthy
period, a crash loop reported but never given up on, and a supervision pass that never sleeps
through a back-off (real child processes, tiny periods)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from sidegate import config, metrics_server
from sidegate.ports import free_port
from sidegate.restart import RestartPolicy, RestartState, relay_envoy
from sidegate.supervisor import Child, Supervisor

BASE = {
    "providers": {"oai": {"api": "openai", "base_url": "https://api.openai.com", "api_key_env": "K"}},
    "models": {"gpt-4o": {"routes": [{"provider": "oai"}]}},
}


def test_backoff_doubles_from_an_immediate_first_restart_and_is_capped():
    p = RestartPolicy(backoff_base_s=0.2, backoff_max_s=5.0)
    assert [p.delay(n) for n in range(1, 8)] == [0.0, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0]
    assert p.delay(10_000) == 5.0  # no overflow, still capped


def test_count_starts_over_after_a_healthy_period_and_never_gives_up():
    p = RestartPolicy(healthy_s=10.0, backoff_base_s=1.0, backoff_max_s=8.0, quick_exit_s=1.0, crash_loop_after=3)
    st = RestartState()
    now = 0.0
    for day in range(20):  # six crashes and more over the process lifetime: each after a healthy run
        started = now
        now += 3600.0
        assert st.running(p, now, started) is (day > 0)  # healthy again: the back-off resets
        assert st.exited(p, now, started) == 0.0  # so each crash is restarted at once
        assert st.due(now) and not st.crash_looping(p)
        st.started()
    assert st.total == 20 and st.in_a_row == 1


def test_crash_loop_is_reported_and_still_retried_at_the_cap():
    p = RestartPolicy(healthy_s=10.0, backoff_base_s=1.0, backoff_max_s=8.0, quick_exit_s=1.0, crash_loop_after=3)
    st = RestartState()
    now, delays = 100.0, []
    for _ in range(50):  # a child that dies 0.1 s after every start
        started = now
        now += 0.1
        delays.append(st.exited(p, now, started))
        assert not st.due(now - 0.001 + delays[-1]) or delays[-1] == 0.0
        now = st.next_start or now
        assert st.due(now)
        st.started()
    assert delays[:5] == [0.0, 1.0, 2.0, 4.0, 8.0] and set(delays[4:]) == {8.0}
    assert st.crash_looping(p) and st.total == 50
    st.exited(p, now + 5.0, now)  # a run longer than quick_exit_s: no longer a crash loop
    assert not st.crash_looping(p)


def _sup(tmp_path: Path, policy: RestartPolicy) -> Supervisor:
    cfg = config.parse(dict(BASE), env={})
    return Supervisor(cfg_path=tmp_path / "x.yaml", cfg=cfg, workdir=tmp_path, env={}, policy=policy)


LISTEN = "import socket,sys,time; s=socket.socket(); s.bind(('127.0.0.1',int(sys.argv[1]))); s.listen(); time.sleep(60)"


@pytest.mark.alone  # bounds a duration
def test_supervisor_pass_never_sleeps_through_a_backoff(tmp_path):
    """A crash-looping child waits out its back-off across passes; the other child's crash is
    restarted at once in the same passes, and the restart counts reach the metrics."""
    sup = _sup(tmp_path, RestartPolicy(healthy_s=0.5, backoff_base_s=0.4, backoff_max_s=0.8, quick_exit_s=1.0, crash_loop_after=3))
    bad = Child("bad", [sys.executable, "-c", "raise SystemExit(3)"], free_port())
    port = free_port()
    good = Child("good", [sys.executable, "-c", LISTEN, str(port)], port)
    try:
        sup._spawn(good, 10.0)
        sup._launch(bad)
        bad.proc.wait(timeout=10)
        deadline = time.monotonic() + 30.0
        slowest, passes_in_backoff = 0.0, 0
        killed = False
        while time.monotonic() < deadline and not (bad.state.total >= 5 and killed and good.listening):
            t = time.monotonic()
            sup.check()
            slowest = max(slowest, time.monotonic() - t)
            passes_in_backoff += bad.state.next_start is not None and bad.state.next_start > time.monotonic()
            if bad.state.total >= 3 and not killed:
                good.proc.kill()  # the other child crashes while `bad` is backing off
                good.proc.wait(timeout=5)
                killed = True
            time.sleep(0.05)
        assert bad.state.total >= 5, bad.state
        assert bad.state.crash_looping(sup.policy)
        assert good.listening and good.proc.poll() is None and good.state.total == 1
        # A pass returns while `bad` waits out its back-off (it never sleeps through one): bounded
        # by the 0.3 s wait for a restarted child's port (loose here for a loaded machine).
        assert passes_in_backoff >= 5, passes_in_backoff
        assert slowest < 2.0, slowest
        doc = json.loads(sup.state_path.read_text())
        assert doc["bad"]["restarts"] >= 5 and doc["bad"]["crash_looping"] is True
        assert doc["good"] == {"restarts": 1, "crash_looping": False}
        reg = CollectorRegistry()
        reg.register(metrics_server.SupervisorCollector(str(sup.state_path)))
        text = generate_latest(reg).decode()
        assert 'sidegate_supervisor_restarts_total{child="good"} 1.0' in text
        assert 'sidegate_supervisor_crash_looping{child="bad"} 1.0' in text
        time.sleep(0.6)  # `good` stays up past healthy_s: its count starts over
        sup.check()
        assert good.state.in_a_row == 0 and good.state.total == 1
    finally:
        sup.stop(grace_s=2)


def test_envoy_log_relay_keeps_reading_when_its_destination_fails():
    """The log file's disk is full (or the terminal is gone): Envoy's stderr must still be read,
    or Envoy blocks on its next log line once the pipe's buffer is full."""

    class Full:
        writes = 0

        def write(self, _: bytes) -> int:
            self.writes += 1
            raise OSError(28, "No space left on device")

        def flush(self) -> None: ...

        def close(self) -> None: ...

    # ~1 MB of log lines: far more than a pipe holds.
    chatty = "import sys\nfor i in range(20000): sys.stderr.write('[info] line %d of the log\\n' % i)"
    proc = subprocess.Popen([sys.executable, "-c", chatty], stderr=subprocess.PIPE)
    dest = Full()
    t = threading.Thread(target=relay_envoy, args=(proc, dest), daemon=True)
    t.start()
    try:
        assert proc.wait(timeout=30) == 0  # it was never blocked on its stderr
    finally:
        proc.kill()
    t.join(timeout=10)
    assert not t.is_alive() and dest.writes > 0
