"""Two OS processes race ~300 concurrent reservations each against one server (and against a real
3-node store cluster, through each store client): exactly N admitted."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import quota_helpers
from cluster_helpers import StoreCluster, running_cluster
from quota_helpers import SERVER_KINDS, running_server

CALLS_PER_PROCESS = 300
TOKENS = 7
ADMIT = 137  # the TPM limit fits exactly this many requests


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_two_processes_admit_exactly_n(kind: str) -> None:
    with running_server(kind) as srv:
        _race_admits_exactly_n(srv.url, kind, "redispy")


@pytest.fixture(scope="module")
def store_cluster() -> Iterator[StoreCluster]:
    with running_cluster() as c:
        yield c


@pytest.mark.parametrize("client", ["lean", "redispy"])
def test_two_processes_admit_exactly_n_on_a_cluster(store_cluster: StoreCluster, client: str) -> None:
    """The tenant's keys share one hash tag, so each reservation is one script on the node that owns
    that slot: admission stays exact on a cluster, through either client."""
    store_cluster.flush()
    _race_admits_exactly_n(store_cluster.url, f"cluster-{client}", client)


def _race_admits_exactly_n(url: str, kind: str, client: str) -> None:
    args = [url, f"race-{kind}", str(ADMIT * TOKENS), str(TOKENS), str(CALLS_PER_PROCESS), client]
    script = Path(quota_helpers.__file__)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), "worker", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for p in procs:  # both connected and scripts loaded
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        start_at = time.time() + 0.3
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(f"{start_at}\n")
            p.stdin.flush()
        results = []
        for p in procs:
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err[-2000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=5)
    assert sum(r["admitted"] for r in results) == ADMIT
    a, b = results
    assert a["t0"] < b["t1"] and b["t0"] < a["t1"], results  # the two bursts really overlapped
