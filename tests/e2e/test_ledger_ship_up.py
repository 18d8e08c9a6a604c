"""`sidegate up` with `observability.ledger_ship` set: the supervisor starts `sidegate ledger run`,
requests through the real Envoy land in the ledger and from there in ClickHouse (chDB), once each,
also across a SIGKILL of the runner (the supervisor restarts it). chDB is read after the stack
stopped (one process per chDB directory)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import openai
import pytest
from harness import Stack
from ledger_ship_helpers import clickhouse

from sidegate.ports import free_port

pytestmark = pytest.mark.e2e


def shipped(port: int) -> float:
    """The runner's `shipped` counter (0 before its first batch or while it is down)."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return 0.0
    lines = [
        ln
        for ln in text.splitlines()
        if ln.startswith('sidegate_ledger_ship_records_total{outcome="shipped"}')
    ]
    return float(lines[0].split()[-1]) if lines else 0.0


def wait_shipped(port: int, at_least: float, stack: Stack, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert stack.sup is not None
        stack.sup.check()  # what `sidegate up`'s loop does every 0.2 s (restarts the runner if it died)
        if shipped(port) >= at_least:
            return
        time.sleep(0.2)
    raise AssertionError(f"the runner did not ship {at_least} records:\n{stack.logs()[-3000:]}")


def assert_caught_up(port: int) -> None:
    """The lag gauge reaches 0 and the seconds since the last insert are small."""
    deadline = time.monotonic() + 10
    values: dict[str, float] = {}
    while time.monotonic() < deadline:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        values = {ln.split()[0]: float(ln.split()[1]) for ln in text.splitlines()
                  if ln.startswith(("sidegate_ledger_ship_lag_records ", "sidegate_ledger_ship_seconds_since_insert ",
                                    "sidegate_ledger_ship_batches_total "))}  # fmt: skip
        if values.get("sidegate_ledger_ship_lag_records") == 0:
            break
        time.sleep(0.1)
    assert values["sidegate_ledger_ship_lag_records"] == 0, values
    assert 0 <= values["sidegate_ledger_ship_seconds_since_insert"] < 10
    assert values["sidegate_ledger_ship_batches_total"] >= 1


def test_up_runs_the_shipper_and_requests_land_in_clickhouse(
    tmp_path_factory, fake_openai, fake_anthropic
) -> None:
    ch = tmp_path_factory.mktemp("clickhouse") / "data"
    port = free_port()
    extra = {"observability": {"ledger_metrics_port": port, "ledger_ship": {
        "url": f"chdb://{ch}", "create_tables": True, "batch_size": 10, "flush_interval_s": 0.05,
        "retry_initial_s": 0.1, "consumer": "e2e"}}}  # fmt: skip
    stack = Stack(tmp_path_factory.mktemp("stack"), fake_openai.url, fake_anthropic.url, extra=extra).start()
    try:
        assert stack.sup is not None
        runner = stack.sup.child("ledger")
        assert runner.cmd[-6:] == ["ledger", "run", "-c", str(stack.cfg_path), "--metrics-port", str(port)]
        client = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=stack.keys["acme"].key, max_retries=0)
        for _ in range(3):
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        wait_shipped(port, 3, stack)
        assert_caught_up(port)
        # The runner killed outright: the supervisor restarts it, the next records are shipped too.
        assert runner.proc is not None
        os.kill(runner.proc.pid, signal.SIGKILL)
        runner.proc.wait(timeout=10)
        anthropic_client = openai.OpenAI(
            base_url=stack.base_url + "/v1", api_key=stack.keys["globex"].key, max_retries=0
        )
        anthropic_client.chat.completions.create(
            model="claude-haiku", messages=[{"role": "user", "content": "hi"}]
        )
        wait_shipped(port, 1, stack)
        assert runner.state.total == 1
        ledger = stack.ledger()
    finally:
        stack.stop()
    assert len(ledger) == 4
    rows, counts = asyncio.run(clickhouse(
        Path(ch), "SELECT request_id, tenant, model, provider, status, input_tokens FROM sidegate.ledger ORDER BY ts",
        "SELECT count() AS n, count(DISTINCT id) AS ids FROM sidegate.ledger"))  # fmt: skip
    assert counts == [{"n": 4, "ids": 4}]
    want = [{"request_id": r.request_id, "tenant": r.tenant, "model": r.model, "provider": r.provider,
             "status": r.status, "input_tokens": r.input_tokens} for r in ledger]  # fmt: skip
    assert rows == want and rows[-1]["tenant"] == "globex" and rows[-1]["provider"] == "anthropic"
    assert all(r["request_id"] and r["status"] == 200 for r in rows)
