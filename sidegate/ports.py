"""Free loopback ports for the listeners a process starts (the embedded store, services, tests),
and waiting for one to listen."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import time

_handed_out: set[int] = set()

RANGE_ENV = "SIDEGATE_PORT_RANGE"
"""`LO-HI`: the ports picked here come from [LO, HI) (default 20000-32000). Processes picking ports
side by side on one machine (the test suite's parallel workers, tests/conftest.py) each get their
own range, so one never hands out a port another picked a moment ago and has not bound yet."""


def port_range() -> tuple[int, int]:
    raw = os.environ.get(RANGE_ENV, "")
    if not raw:
        return 20000, 32000
    lo, _, hi = raw.partition("-")
    try:
        first, end = int(lo), int(hi)
    except ValueError:
        raise ValueError(f"{RANGE_ENV}={raw!r}: expected LO-HI, e.g. 20000-26000") from None
    if not 1024 <= first < end <= 65536:
        raise ValueError(f"{RANGE_ENV}={raw!r}: expected 1024 <= LO < HI <= 65536")
    return first, end


def free_port(host: str = "127.0.0.1", avoid: set[int] | frozenset[int] = frozenset()) -> int:
    """A free port for a listener started a moment later. Picked below the ephemeral range (where
    outgoing connections take and release ports all the time, so a port found free there can be
    someone's local port by the time the listener binds), never one this process already handed
    out, nor one in `avoid` (ports a config names but nothing has bound yet)."""
    return free_port_block(1, host, avoid=avoid)


def free_port_block(n: int, host: str = "127.0.0.1", tries: int = 200, avoid: set[int] | frozenset[int] = frozenset()) -> int:
    """The first of `n` consecutive free ports (for services with several workers), chosen the
    same way as `free_port`."""
    lo, hi = port_range()
    for _ in range(tries):
        base = random.randrange(lo, hi - n)
        block = set(range(base, base + n))
        if block & _handed_out or block & set(avoid):
            continue
        socks = []
        try:
            for i in range(n):
                s = socket.socket()
                socks.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # servers do too (TIME_WAIT is fine)
                s.bind((host, base + i))
            _handed_out.update(block)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no block of {n} free ports")


def wait_for_port(host: str, port: int, timeout_s: float = 10.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {host}:{port}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout_s}s")
