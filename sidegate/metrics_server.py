"""Serving the metrics: what /metrics shows (this process's registry, or in multi-process mode the
aggregate of every worker's samples), the HTTP thread that serves it, and the supervisor's restart
counts folded in for `sidegate up`.

Kept apart from :mod:`sidegate.metrics` (names, labels, recording helpers), which every request
touches; this module is used once per process, at start and at a worker's exit.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, generate_latest, start_http_server

from sidegate.metrics import REGISTRY, multiprocess_dir

if TYPE_CHECKING:
    from sidegate.config import SidegateConfig

log = logging.getLogger("sidegate.metrics")


SUPERVISOR_STATE_ENV = "SIDEGATE_SUPERVISOR_STATE"
"""Set by `sidegate up` for extproc only: the file with its children's restart counts."""


class SupervisorCollector:
    """`sidegate up`'s restart counts, read from the supervisor's state file on each scrape (the
    supervisor has no HTTP server of its own; extproc's /metrics shows them)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        try:
            with open(self.path, encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, ValueError):
            return
        restarts = CounterMetricFamily("sidegate_supervisor_restarts", "Restarts of each `sidegate up` child.", labels=["child"])
        looping = GaugeMetricFamily(
            "sidegate_supervisor_crash_looping",
            "1 while a child exits within a second of each of its last starts (it is still retried).", labels=["child"],
        )  # fmt: skip
        for name, v in sorted(doc.items()):
            restarts.add_metric([str(name)], float(v.get("restarts", 0)))
            looping.add_metric([str(name)], 1.0 if v.get("crash_looping") else 0.0)
        yield restarts
        yield looping


_supervisor_registered = False


def serving_registry() -> CollectorRegistry:
    """What /metrics serves: this process's registry, or the aggregate of all worker processes
    (plus the supervisor's restart counts when `sidegate up` runs this extproc)."""
    state = os.environ.get(SUPERVISOR_STATE_ENV)
    if multiprocess_dir() is None:
        global _supervisor_registered
        if state and not _supervisor_registered:
            REGISTRY.register(SupervisorCollector(state))
            _supervisor_registered = True
        return REGISTRY
    from prometheus_client import multiprocess

    agg = CollectorRegistry()
    multiprocess.MultiProcessCollector(agg)
    if state:
        agg.register(SupervisorCollector(state))
    return agg


def render_text() -> bytes:
    """The Prometheus text exposition (what /metrics returns)."""
    return generate_latest(serving_registry())


@dataclass(slots=True)
class MetricsServer:
    httpd: WSGIServer
    thread: threading.Thread
    host: str
    port: int

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def start_metrics_server(port: int, host: str = "127.0.0.1") -> MetricsServer | None:
    """Serve /metrics over HTTP from a daemon thread (never touches the event loop).

    ``port=0`` picks a free port (see ``.port``). In multi-process mode a port already bound by a
    sibling worker is not an error: that worker serves the aggregate, and this returns None.
    """
    try:
        httpd, thread = start_http_server(port, addr=host, registry=serving_registry())
    except OSError as exc:
        if multiprocess_dir() is not None:
            log.info("metrics port %d already served by a sibling worker (%s)", port, exc.strerror)
            return None
        raise
    bound = int(httpd.server_address[1])
    log.info("metrics on http://%s:%d/metrics", host, bound)
    return MetricsServer(httpd, thread, host, bound)


def service_metrics_port(cfg: SidegateConfig, service: str) -> int:
    """extproc: ``services.metrics_port``; authz: ``services.authz_metrics_port``."""
    return cfg.services.authz_metrics_port if service == "authz" else cfg.services.metrics_port


def mark_process_dead(pid: int) -> None:
    """Multi-process mode: drop a dead worker's live gauges (call from the parent when it exits)."""
    if multiprocess_dir() is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
