"""Why do N extproc workers serve what they serve? One Sidegate stack per configuration, measured
in interleaved rounds of wrk, each round reporting what bench/run.py does not: the CPU each process
used per request (from /proc, robust to neighbours' load) and how Envoy spread the requests over
the workers' endpoints (its admin `/clusters`: rq_total and cx_total per host, per cluster).

    flock /tmp/sidegate-bench.lock env PYTHONPATH=$PWD python bench/probe_workers.py \
        --only front,front-2w --conns 16 --duration 3 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import urllib.request
from collections import defaultdict
from pathlib import Path

from bench.measure import TICK, run_wrk, wrk_script
from bench.scenarios import FULL_PIPELINE, GATEWAY, path_of, setup_bed, start_stack
from sidegate.ports import wait_for_port
from sidegate.supervisor import Supervisor

WATCHED = ("sidegate_front", "sidegate_extproc")
"""The clusters whose per-host spread is reported (the front's checks and try calls, the access
log's gRPC stream); `sidegate_front.<i>` (replays, try responses) are summed per worker too."""


def _cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def _switches(pid: int) -> int:
    """Context switches of every thread of the process so far (voluntary and not: each one a
    wake-up, and a chance for the next process on that core to evict its caches)."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            for line in (task / "status").read_text().splitlines():
                if "ctxt_switches:" in line:
                    total += int(line.split()[1])
    except (OSError, ValueError):
        pass
    return total


def host_counts(admin_port: int) -> dict[str, int]:
    """`<cluster>@<port>.<stat>` -> value, for the watched clusters' hosts (rq_total, cx_total)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/clusters", timeout=5).read().decode()
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split("::")
        if (
            len(parts) == 4
            and parts[0].startswith(WATCHED)
            and parts[2] in ("rq_total", "cx_total", "rq_error")
        ):
            port = parts[1].rsplit(":", 1)[1]
            out[f"{parts[0]}@{port}.{parts[2]}"] = int(parts[3])
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--only",
        default="front,front-2w",
        help="scenarios of bench/scenarios.py; NAME+pin: its extproc workers pinned one per CPU",
    )
    ap.add_argument("--conns", default="16")
    ap.add_argument("--duration", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    names = args.only.split(",")
    bed = setup_bed("sidegate-probe-")
    work, fport, fake, key, config, env = bed.work, bed.fport, bed.fake, bed.key, bed.config, bed.env
    stacks: list[tuple[str, Supervisor, Path, str]] = []
    try:
        wait_for_port("127.0.0.1", fport, 10, fake)
        table = {n: (s, b) for n, s, b in GATEWAY}
        for name in names:
            services, body = table[name.removesuffix("+pin")]
            sup = start_stack(work, name, config(**services), env)
            if name.endswith("+pin"):  # worker i on CPU i (mod the CPUs): no migrations between them
                cpus = sorted(os.sched_getaffinity(0))
                workers = [c.proc.pid for c in sup.children if c.proc and c.name.startswith("extproc")]
                for i, pid in enumerate(workers):
                    os.sched_setaffinity(pid, {cpus[i % len(cpus)]})
            script = work / f"{name}.lua"
            wrk_script(script, body, key, vary=name.removesuffix("+pin") in FULL_PIPELINE)
            stacks.append((name, sup, script, f"http://127.0.0.1:{sup.cfg.listener.port}{path_of(body)}"))
        for _, _, script, url in stacks:
            run_wrk(url, script, 16, 3)  # warm-up
        for r in range(args.rounds):
            for name, sup, script, url in stacks[r % len(stacks) :] + stacks[: r % len(stacks)]:
                procs = {c.name: c.proc.pid for c in sup.children if c.proc}
                for c in (int(x) for x in args.conns.split(",")):
                    cpu0 = {n: _cpu(p) for n, p in procs.items()} | {"fake": _cpu(fake.pid)}
                    sw0 = {n: _switches(p) for n, p in procs.items()}
                    st0 = host_counts(sup.cfg.listener.admin_port)
                    res = run_wrk(url, script, c, args.duration)
                    cpu1 = {n: _cpu(p) for n, p in procs.items()} | {"fake": _cpu(fake.pid)}
                    sw1 = {n: _switches(p) for n, p in procs.items()}
                    st1 = host_counts(sup.cfg.listener.admin_port)
                    n = res["requests"] or float("nan")
                    cpu = " ".join(f"{k}={1e3 * (cpu1[k] - cpu0[k]) / n:.3f}" for k in cpu1 if k != "xds")
                    sw = " ".join(f"{k}={(sw1[k] - sw0[k]) / n:.2f}" for k in sw1 if k != "xds")
                    spread: dict[str, int] = defaultdict(int)
                    for k, v in st1.items():
                        if v - st0.get(k, 0):
                            spread[k] = v - st0.get(k, 0)
                    print(
                        f"r{r + 1} {name:<20} c={c:<3} rps={res['rps']:.0f} p50={res['p50']:.2f}ms non2xx={res['errors']:.0f}"
                        f" cpu ms/req: {cpu}",
                        flush=True,
                    )
                    print(f"    context switches/req: {sw}", flush=True)
                    print("    " + " ".join(f"{k}={v}" for k, v in sorted(spread.items())), flush=True)
    finally:
        for _, sup, _, _ in reversed(stacks):
            sup.stop()
        fake.terminate()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
