"""When and how `sidegate up` restarts a child that exited: exponential back-off, a count that starts over
once the child has stayed up for a healthy period, and no giving up.

A child is never abandoned: a gateway whose parts can still start must come back by itself, and
one that cannot start (a bad binary, a port taken by someone else) only costs one attempt per
`backoff_max_s`. A child that exits within `quick_exit_s` of each of its last `crash_loop_after`
starts is *crash-looping*: logged at error level on every restart and exposed as
`sidegate_supervisor_crash_looping{child}` (the supervisor's state file, read by extproc's
/metrics), but still retried at the capped back-off."""

from __future__ import annotations

import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import IO


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    healthy_s: float = 60.0
    """A child up this long since its last start is healthy again: back-off and count start over."""
    backoff_base_s: float = 0.2
    """Delay before the second restart in a row (the first is immediate), doubled each time."""
    backoff_max_s: float = 30.0
    quick_exit_s: float = 1.0
    crash_loop_after: int = 5

    def delay(self, in_a_row: int) -> float:
        """Back-off before restart number `in_a_row` (1 = the first since the child was healthy)."""
        if in_a_row <= 1:
            return 0.0
        return min(self.backoff_base_s * 2 ** min(in_a_row - 2, 30), self.backoff_max_s)


@dataclass(slots=True)
class RestartState:
    """One child's restart bookkeeping (owned by the supervisor loop, no locking)."""

    total: int = 0
    """Restarts over the supervisor's lifetime (the Prometheus counter)."""
    in_a_row: int = 0
    """Exits since the child was last healthy: drives the back-off."""
    quick_in_a_row: int = 0
    next_start: float | None = None
    """When the exited child is due to start again (None: it is running or starting)."""

    def crash_looping(self, policy: RestartPolicy) -> bool:
        return self.quick_in_a_row >= policy.crash_loop_after

    def exited(self, policy: RestartPolicy, now: float, started_at: float) -> float:
        """Record an exit seen at `now` of a child started at `started_at`; returns the delay
        before its restart (also kept in `next_start`)."""
        self.total += 1
        self.in_a_row += 1
        self.quick_in_a_row = self.quick_in_a_row + 1 if now - started_at < policy.quick_exit_s else 0
        delay = policy.delay(self.in_a_row)
        self.next_start = now + delay
        return delay

    def due(self, now: float) -> bool:
        return self.next_start is not None and now >= self.next_start

    def started(self) -> None:
        self.next_start = None

    def running(self, policy: RestartPolicy, now: float, started_at: float) -> bool:
        """A running child's check: True when it has just become healthy again after restarts
        (the back-off and crash-loop count start over)."""
        if self.in_a_row and now - started_at >= policy.healthy_s:
            self.in_a_row = 0
            self.quick_in_a_row = 0
            return True
        return False


WIP_NOTICE = b"marked as work-in-progress"
"""Envoy's start-up notice for each message of a work-in-progress extension the bootstrap uses
(sse_to_metadata and its JSON parser, until issue 25 moved the direct lane's stream usage into
the stream watch): ~20 identical lines on every
start that say nothing actionable, dropped from Envoy's output (nothing else is)."""


def listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.05):
            return True
    except OSError:
        return False


def relay_envoy(proc: subprocess.Popen[bytes], out: IO[bytes] | None) -> None:
    """Copy Envoy's log (its stderr) to its log file (or our stderr) without the work-in-progress
    notices. Envoy writes a few lines a minute there; the access log goes to its stdout."""
    dest = out or sys.stderr.buffer
    assert proc.stderr is not None
    try:
        for line in proc.stderr:
            if WIP_NOTICE in line:
                continue
            try:
                dest.write(line)
                dest.flush()
            except (OSError, ValueError):
                # A full disk, a closed terminal: the line is lost, and the pipe is still read (an
                # unread pipe would block Envoy's logging threads once full).
                pass
    except (OSError, ValueError):
        pass
    finally:
        if out is not None:
            out.close()
