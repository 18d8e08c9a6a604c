"""Profile one kind of translated stream: N streams back to back through a full stack, each
process's CPU per stream printed; with SIDEGATE_EXTPROC_PROFILE=/path extproc runs under cProfile
and writes /path.<pid> when the stack stops.

    SIDEGATE_EXTPROC_PROFILE=/tmp/p python bench/stream_profile.py short 200
    python -c "import pstats; pstats.Stats('/tmp/p.<pid>').sort_stats('tottime').print_stats(30)"
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import stream_bench
from bench.measure import cpu_seconds
from bench.scenarios import sidegate_config, start_stack
from sidegate import keys


def main() -> int:
    kind = sys.argv[1] if len(sys.argv) > 1 else "short"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    fake = stream_bench.PacedFake()
    key, kid = keys.new_key()
    env = dict(os.environ, BENCH_KEY="sk-bench", SIDEGATE_LOG_LEVEL="WARNING")
    config = functools.partial(sidegate_config, fake.port, key, kid)
    sup = start_stack(
        Path(tempfile.mkdtemp(prefix="sidegate-stream-profile-")),
        "t",
        config(auth="inline", front="http"),
        env,
    )
    try:
        procs = [(getattr(c, "name", "?"), c.proc.pid) for c in sup.children if c.proc]
        before = {pid: cpu_seconds([pid]) for _, pid in procs}
        print(stream_bench.measure(sup.cfg.listener.port, [pid for _, pid in procs], "claude", kind, key, n))
        # measure() runs 3 warm-up streams first
        print({name: round(1e3 * (cpu_seconds([pid]) - before[pid]) / (n + 3), 3) for name, pid in procs})
    finally:
        sup.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
