"""Issue 12: SIGTERM to `sidegate up` drains: a streamed request in flight completes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
import yaml
from harness import ANTHROPIC_PROVIDER_KEY, OPENAI_PROVIDER_KEY, Stack

from sidegate.ports import wait_for_port

pytestmark = pytest.mark.e2e


def test_sigterm_during_a_stream_lets_it_finish(tmp_path, fake_openai, fake_anthropic):
    st = Stack(tmp_path, fake_openai.url, fake_anthropic.url, extra={"services": {"drain_s": 15}})
    data = st.config()
    cfg = tmp_path / "sidegate.yaml"
    cfg.write_text(yaml.safe_dump(data))
    env = dict(os.environ, E2E_OPENAI_KEY=OPENAI_PROVIDER_KEY, E2E_ANTHROPIC_KEY=ANTHROPIC_PROVIDER_KEY)
    env.pop("SIDEGATE_REDIS_URL", None)
    out = tmp_path / "up.log"  # a file, not a pipe nobody reads (a full pipe would stall the children)
    with out.open("wb") as sink:
        up = subprocess.Popen([sys.executable, "-m", "sidegate.cli", "up", "-c", str(cfg)], env=env,
                              stdout=sink, stderr=subprocess.STDOUT)  # fmt: skip
    port = data["listener"]["port"]
    try:
        wait_for_port("127.0.0.1", port, 60, up)
        base = f"http://127.0.0.1:{port}"
        deadline, ready = time.monotonic() + 30, False
        while time.monotonic() < deadline and not ready:  # Envoy ready (admin /ready) comes after the listener
            with contextlib.suppress(httpx.HTTPError):
                ready = httpx.get(f"http://127.0.0.1:{data['listener']['admin_port']}/ready", timeout=1).status_code == 200
            time.sleep(0.1)
        assert ready, out.read_text(errors="replace")[-4000:]
        fake_openai.script([{"chunks": 8, "chunk_delay_s": 0.4}])
        body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "one two three four five six seven eight"}]}
        lines: list[str] = []
        sent = threading.Event()

        def stream() -> None:
            with httpx.stream("POST", base + "/v1/chat/completions", json=body, timeout=30,
                              headers={"authorization": f"Bearer {st.keys['acme'].key}"}) as r:  # fmt: skip
                for line in r.iter_lines():
                    if line.startswith("data:"):
                        lines.append(line)
                        sent.set()

        t = threading.Thread(target=stream)
        t.start()
        assert sent.wait(10), out.read_text(errors="replace")[-4000:]
        up.send_signal(signal.SIGTERM)
        t.join(30)
        assert not t.is_alive()
        assert lines[-1] == "data: [DONE]" and len(lines) >= 9, lines[-3:]
        assert up.wait(30) == 0
    finally:
        if up.poll() is None:
            up.kill()
            up.wait(10)
