"""The usage ledger's bound through a real stack: requests served while Valkey is down (fail open)
are spilled by extproc's ledger writer and reach the stream once Valkey is back, each exactly once,
in order, with nothing dropped; the spill's file is gone afterwards."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest
from fault_helpers import body_for, kill, metric_sum, metrics_text, post, restart_valkey_same_port, wait_until
from harness import Stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory, fake_openai, fake_anthropic) -> Iterator[Stack]:
    spill = tmp_path_factory.mktemp("ledger-spill")
    extra = {
        "store": {"fail_mode": "open"},
        "defaults": {"guard": None},
        "observability": {"ledger_spill": {"dir": str(spill)}},
    }
    s = Stack(tmp_path_factory.mktemp("ledger-bound"), fake_openai.url, fake_anthropic.url, extra=extra)
    s.start()
    s.spill_dir = spill  # type: ignore[attr-defined]
    yield s
    s.stop()


def outcome(stack: Stack, name: str) -> float:
    return metric_sum(metrics_text(stack), "sidegate_ledger_records_total", outcome=name)


def test_records_of_a_store_outage_arrive_once_in_order(stack: Stack) -> None:
    for _ in range(5):
        assert post(stack, "openai", body_for("openai", "gpt-4o-mini")).status_code == 200
    assert wait_until(lambda: len(stack.ledger()) >= 5, 5.0)
    before = len(stack.ledger())

    kill(stack, "valkey", signal.SIGTERM)  # a clean stop: its append-only file keeps the stream
    served = 0
    for _ in range(15):
        served += post(stack, "openai", body_for("openai", "gpt-4o-mini"), timeout=5).status_code == 200
    assert served == 15  # fail open: the outage does not reach clients
    assert wait_until(lambda: outcome(stack, "spilled") >= 15, 10.0)
    assert list(stack.spill_dir.glob("*.jsonl"))  # type: ignore[attr-defined]
    assert metric_sum(metrics_text(stack), "sidegate_ledger_spill_bytes") > 0

    restart_valkey_same_port(stack)
    assert wait_until(lambda: outcome(stack, "replayed") >= 15, 15.0)
    for _ in range(5):
        assert post(stack, "openai", body_for("openai", "gpt-4o-mini")).status_code == 200
    assert wait_until(lambda: len(stack.ledger()) >= before + 20, 10.0)
    time.sleep(0.5)  # nothing more comes
    recs = stack.ledger()
    assert len(recs) == before + 20
    ids = [r.request_id for r in recs]
    assert len(set(ids)) == len(ids)  # exactly once
    ts = [r.ts for r in recs]
    assert ts == sorted(ts)  # in order (stream order is completion order)
    assert (
        outcome(stack, "dropped_full")
        + outcome(stack, "dropped_error")
        + outcome(stack, "dropped_spill_full")
        == 0
    )
    assert wait_until(lambda: not list(stack.spill_dir.glob("*.jsonl")), 5.0)  # type: ignore[attr-defined]
    assert metric_sum(metrics_text(stack), "sidegate_ledger_spill_bytes") == 0
