"""A real Prometheus (Debian's `prometheus` binary) scraping a running stack, for tests.

`PrometheusServer` starts it as a child process on a free loopback port with a generated config
(every scrape at `scrape_s`, storage in a temp directory, no remote read/write, no alerting) and
stops it by its PID. `stack_targets` names what a started `harness.Stack` exposes: Envoy's admin
`/stats/prometheus` and the `/metrics` port of each Sidegate service.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from sidegate.features.ledger.service import runner_wanted
from sidegate.ports import free_port

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


@dataclass(frozen=True)
class Target:
    job: str
    address: str  # host:port
    path: str = "/metrics"


def targets_for(
    admin_port: int, metrics_port: int, authz_metrics_port: int, host: str = "127.0.0.1",
    ledger_metrics_port: int = 0,
) -> list[Target]:  # fmt: skip
    """What a stack serves metrics on: Envoy's admin (its own stats in Prometheus' text format), the
    extproc and authz services' metrics ports (0: off, or no authz process) and the ledger runner's
    (`sidegate ledger run`, started when a ledger job is configured; 0: none)."""
    out = [Target("envoy", f"127.0.0.1:{admin_port}", "/stats/prometheus")]
    if metrics_port:
        out.append(Target("sidegate-extproc", f"{host}:{metrics_port}"))
    if authz_metrics_port:
        out.append(Target("sidegate-authz", f"{host}:{authz_metrics_port}"))
    if ledger_metrics_port:
        out.append(Target("sidegate-ledger", f"{host}:{ledger_metrics_port}"))
    return out


def stack_targets(stack: Any) -> list[Target]:
    """`targets_for` a started `harness.Stack` (no authz process when auth runs inline in the gateway)."""
    cfg = stack.sup.cfg
    svc = cfg.services
    host = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(svc.metrics_host, svc.metrics_host)
    authz = svc.authz_metrics_port if svc.auth != "inline" else 0
    ledger = stack.sup.child("ledger").port if runner_wanted(cfg) else 0
    return targets_for(cfg.listener.admin_port, svc.metrics_port, authz, host, ledger)


class PromQLError(AssertionError):
    """Prometheus refused a query (status error), with its error type and message."""


@dataclass
class PrometheusServer:
    workdir: Path
    targets: list[Target]
    scrape_s: float = 1.0
    rule_files: list[Path] = field(default_factory=list)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    _client: httpx.Client | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict[str, Any]:
        jobs: dict[tuple[str, str], list[str]] = {}
        for t in self.targets:
            jobs.setdefault((t.job, t.path), []).append(t.address)
        interval = f"{int(self.scrape_s * 1000)}ms"
        return {
            "global": {
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "evaluation_interval": interval,
            },
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [
                {"job_name": job, "metrics_path": path, "static_configs": [{"targets": addrs}]}
                for (job, path), addrs in jobs.items()
            ],
        }

    def start(self, timeout_s: float = 20.0) -> PrometheusServer:
        if not Path(PROMETHEUS).is_file():
            raise RuntimeError("no prometheus binary: apt-get install prometheus (scripts/test installs it)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg_path = self.workdir / "prometheus.yml"
        cfg_path.write_text(yaml.safe_dump(self.config()))
        self.port = free_port()
        log = (self.workdir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={cfg_path}", f"--web.listen-address=127.0.0.1:{self.port}",
             f"--storage.tsdb.path={self.workdir / 'data'}", "--storage.tsdb.retention.time=1h",
             "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        log.close()
        self.started_at = time.time()
        self._client = httpx.Client(base_url=self.url, timeout=10)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited {self.proc.returncode}:\n{self.log()}")
            try:
                if self._client.get("/-/ready").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"prometheus not ready within {timeout_s}s:\n{self.log()}")

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # by its PID: the child this object started
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log(self) -> str:
        path = self.workdir / "prometheus.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    # -- HTTP API --------------------------------------------------------------------------------

    def api(self, path: str, **params: Any) -> dict[str, Any]:
        """GET /api/v1/<path>; the whole answer (status, data, warnings). A refused query raises
        PromQLError with Prometheus' errorType and error."""
        assert self._client is not None
        r = self._client.get(f"/api/v1/{path}", params=params)
        doc: dict[str, Any] = r.json()
        if doc.get("status") != "success":
            raise PromQLError(f"{path} {params}: {doc.get('errorType')}: {doc.get('error')}")
        return doc

    def query(self, expr: str, at: float | None = None) -> dict[str, Any]:
        return self.api("query", query=expr, **({"time": f"{at:.3f}"} if at is not None else {}))

    def query_range(self, expr: str, start: float, end: float, step_s: float) -> dict[str, Any]:
        return self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step_s:g}")

    def value(self, expr: str) -> float | None:
        """The instant value of a single-series expression now (None: no series)."""
        result = self.query(expr)["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, expr: str, pred: Any, timeout_s: float = 15.0) -> float:
        """Polls `expr` (one series) until `pred(value)` holds; returns the value."""
        deadline = time.monotonic() + timeout_s
        got: float | None = None
        while time.monotonic() < deadline:
            got = self.value(expr)
            if got is not None and pred(got):
                return got
            time.sleep(0.2)
        raise AssertionError(f"{expr} never satisfied the condition within {timeout_s}s (last: {got})")

    def wait_scraped(self, timeout_s: float = 15.0) -> None:
        """Every target answered its last scrape (up == 1 for each)."""
        n = len(self.targets)
        self.wait_for("count(up == 1)", lambda v: v >= n, timeout_s)


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Runs promtool (its checks exit non-zero with the reason on stderr/stdout)."""
    return subprocess.run([PROMTOOL, *args], input=stdin, capture_output=True, text=True, timeout=60)
