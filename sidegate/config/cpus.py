"""How many CPUs this process may use, and the worker counts `auto` derives from it.

Here (not in the supervisor) because `services.extproc_workers: 0` is resolved when the config is
parsed: every process that reads the config (the supervisor, the xDS server rendering Envoy's
clusters, the workers) must agree on the count, and they all run on the same host and affinity.
"""

from __future__ import annotations

import math
import os
from pathlib import Path


def _cgroup_quota() -> tuple[str, str] | None:
    """(quota, period) of this process's cgroup CPU limit: v2 `cpu.max`, else v1's two files."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return quota, period
    except (OSError, ValueError):
        pass
    try:
        v1 = Path("/sys/fs/cgroup/cpu")
        return (v1 / "cpu.cfs_quota_us").read_text().strip(), (v1 / "cpu.cfs_period_us").read_text().strip()
    except OSError:
        return None


def usable_cpus() -> int:
    """CPUs this process may use: its affinity, capped by a cgroup CPU quota (a container's CPU
    limit, which affinity does not show: a pod limited to 2 CPUs on a 32-core node)."""
    cpus = len(os.sched_getaffinity(0))
    limit = _cgroup_quota()
    if (
        limit is None
        or limit[0] in ("max", "-1")
        or not limit[0].isdigit()
        or not limit[1].isdigit()
        or int(limit[1]) == 0
    ):
        return cpus
    return max(1, min(cpus, math.ceil(int(limit[0]) / int(limit[1]))))


def auto_extproc_workers(cpus: int) -> int:
    """`services.extproc_workers: 0`: one extproc worker per two usable CPUs, at least one.

    Why half: a full-pipeline request costs Envoy and extproc about the same CPU (0.40-0.55 ms
    each, docs/performance.md, issue 25 "Workers"), so the cores are split between them evenly and
    Envoy's auto concurrency takes the other half. Not more: a worker is one Python process (one
    core at most), and on a box where the workers cannot each have a core of their own a second one
    only adds CPU per request (measured on 2 cores: +40 % per request over all processes, so fewer
    requests per second in every round)."""
    return max(1, cpus // 2)
