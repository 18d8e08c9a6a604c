"""The benchmark's table code (bench/report.py, bench/measure.py's CPU split): the ratios to the
peers and the CPU per request per process kind. No peer, wrk or Envoy is needed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from bench.measure import check_chat_completion, cpu_by_kind, process_kind
from bench.peers import portkey_headers
from bench.report import report


def _row(name: str, conns: int, round_: int, rps: float, cpu: dict[str, float]) -> dict:
    return {"name": name, "conns": conns, "round": round_, "p50": 1.0, "p99": 2.0, "rps": rps,
            "cpu_ms": sum(cpu.values()), "cpu_by_kind": cpu}  # fmt: skip


def test_report_has_peer_ratios_within_each_round_and_the_cpu_split() -> None:
    rows = []
    for rnd, scale in enumerate((1.0, 0.5, 1.0)):  # round 2 is a slow minute for every row alike
        rows += [
            _row("envoy", 1, rnd, 10_000 * scale, {"envoy": 0.07, "fake": 0.03}),
            _row("front-translated", 1, rnd, 1_500 * scale,
                 {"envoy": 0.4, "extproc": 0.5, "xds": 0.0, "store": 0.1, "fake": 0.03}),
            _row("litellm-translated", 1, rnd, 100 * scale, {"litellm": 9.0, "fake": 0.03}),
            _row("portkey-translated", 1, rnd, 1_000 * scale, {"portkey": 0.9, "fake": 0.03}),
        ]  # fmt: skip
    lines = report(rows, 3)
    header = next(line for line in lines if line.startswith("| scenario | conns | p50"))
    # Only the peers measured get a column, in a fixed order.
    assert header.endswith("| x LiteLLM translating | x Portkey translating |")
    assert "| x LiteLLM |" not in header
    front = next(line for line in lines if line.startswith("| front-translated | 1 | 1.000"))
    assert front.endswith("| 15.00 | 1.50 |")  # the same ratio in every round: the median is exact
    cpu_header = next(line for line in lines if line.startswith("| scenario | conns | total"))
    assert (
        cpu_header
        == "| scenario | conns | total | path | envoy | extproc | xds | store | litellm | portkey | fake |"
    )
    cpu_front = next(line for line in lines if line.startswith("| front-translated | 1 | 1.030"))
    assert (
        cpu_front
        == "| front-translated | 1 | 1.030 | 1.000 | 0.400 | 0.500 | 0.000 | 0.100 | - | - | 0.030 |"
    )
    assert "| portkey-translated | 1 | 0.930 | 0.900 | - | - | - | - | - | 0.900 | 0.030 |" in lines


def test_report_without_a_split_keeps_the_old_table() -> None:
    rows = [{"name": "envoy", "conns": 1, "round": 0, "p50": 1.0, "p99": 2.0, "rps": 9.0, "cpu_ms": 0.1}]
    lines = report(rows, 1)
    assert lines[1] == "| scenario | conns | p50 ms | p99 ms | RPS | added p50 vs Envoy ms | CPU ms/req |"
    assert lines[-1] == "| envoy | 1 | 1.000 | 2.000 | 9 | +0.000 | 0.100 |"


def test_process_kinds_of_the_supervisor_children() -> None:
    assert [process_kind(n) for n in ("envoy", "extproc", "extproc-1", "authz-2", "xds", "valkey", "admin")] == [
        "envoy", "extproc", "extproc", "authz", "xds", "store", "admin"]  # fmt: skip


def test_cpu_by_kind_adds_workers_and_descendants_and_keeps_listed_pids_apart() -> None:
    # Each busy process burns 0.3 s of CPU, then says so and sleeps (bounded: 20 s).
    busy = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\nprint('done', flush=True)\ntime.sleep(20)"
    # A parent that starts a busy child (its pid printed first) and sleeps.
    spawn = (f"import subprocess, sys, time\nc = subprocess.Popen([sys.executable, '-c', {busy!r}])\n"
             "print(c.pid, flush=True)\ntime.sleep(20)")  # fmt: skip
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
             for code in (busy, spawn, busy)]  # fmt: skip
    try:
        assert procs[0].stdout and procs[1].stdout and procs[2].stdout
        child = int(procs[1].stdout.readline())
        assert [p.stdout.readline().strip() for p in procs] == ["done"] * 3  # every busy loop ran
        split = cpu_by_kind({procs[0].pid: "extproc", procs[2].pid: "extproc", procs[1].pid: "peer"})
        assert split["extproc"] >= 0.58  # two workers of one kind add up
        assert split["peer"] >= 0.29  # its busy child (not listed) counts with it
        # A listed child is its own kind, not in its parent's as well.
        apart = cpu_by_kind({procs[1].pid: "peer", child: "child"})
        assert apart["child"] >= 0.29 and apart["peer"] < 0.25
        assert cpu_by_kind({}) == {}
    finally:
        for p in procs:  # each in its own session: the group holds the spawned child too
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            if p.stdout:
                p.stdout.close()


def test_portkey_headers_point_at_the_fake() -> None:
    assert portkey_headers(4321, "anthropic") == {
        "x-portkey-provider": "anthropic", "x-portkey-custom-host": "http://127.0.0.1:4321/v1"}  # fmt: skip


def test_check_chat_completion_accepts_the_fakes_answer_only() -> None:
    """A peer answering an error fast would flatter it: the bench checks one answer first."""
    import http.server
    import threading

    from bench import upstream

    answers = [
        upstream.OPENAI_BODY.encode(),
        b'{"error":{"message":"no"}}',
        b'{"object":"chat.completion","choices":[]}',
    ]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            body = answers.pop(0)
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/v1/chat/completions"
        assert check_chat_completion(url, b"{}", {}) is None
        assert "unexpected answer" in (check_chat_completion(url, b"{}", {}) or "")
        assert "unexpected answer" in (check_chat_completion(url, b"{}", {}) or "")
    finally:
        server.shutdown()
        server.server_close()
