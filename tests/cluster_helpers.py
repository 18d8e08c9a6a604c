"""A real 3-node Redis Cluster for the tests that run a store feature on a cluster.

Debian's `/usr/bin/redis-server` (the one tests/quota_helpers.py runs too) with `--cluster-enabled
yes` on free loopback ports, joined and given the 16384 slots by `redis-cli --cluster create` when
`redis-cli` is installed, else by CLUSTER MEET / ADDSLOTS from here. Torn down by PID.

`running_cluster()` (a test module's fixture: starting takes ~1-2 s) yields a :class:`StoreCluster`; its `url`
is a `redis+cluster://` URL as `store.url` takes it; `flush()` empties every node between tests.
`running_cluster(replicas=1, node_timeout_ms=1000)`: a replica per primary that takes over within
about two seconds of its primary's death (the failover tests kill a node with `kill(i)`; `start_node()`
starts a spare node outside the cluster, to join it at a new address).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis
from quota_helpers import server_binary

from sidegate.ports import free_port, wait_for_port

NODES = 3
SLOTS = 16384


def _free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(50):
        port = free_port()
        if port + 10000 >= 65536:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


@dataclass
class StoreCluster:
    ports: list[int] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    formed_by: str = ""
    """`redis-cli` or `python` (CLUSTER MEET/ADDSLOTS)."""
    replicas: int = 0
    node_timeout_ms: int = 5000
    extra_args: tuple[str, ...] = ()
    """More redis-server options for every node (an ACL `--user`, say)."""
    workdir: str = ""

    @property
    def size(self) -> int:
        """Nodes the cluster was formed with (primaries and replicas)."""
        return NODES * (1 + self.replicas)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def node(self, i: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.ports[i], socket_timeout=5)

    def flush(self) -> None:
        """Every node emptied (scripts kept): each test starts clean."""
        for i in range(len(self.ports)):
            with self.node(i) as r:
                r.flushall()

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def start_node(self) -> int:
        """One more node on a new port, outside the cluster until it MEETs it; returns its index."""
        binary = server_binary("redis")
        port = _free_cluster_port()
        node_dir = Path(self.workdir) / str(len(self.ports))
        node_dir.mkdir()
        cmd = [
            binary, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
            "--cluster-config-file", str(node_dir / "nodes.conf"),
            "--cluster-node-timeout", str(self.node_timeout_ms), "--save", "", "--appendonly", "no",
            "--dir", str(node_dir), "--loglevel", "warning", *self.extra_args,
        ]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        self.ports.append(port)
        wait_for_port("127.0.0.1", port, 10.0, proc)
        return len(self.ports) - 1

    def kill(self, i: int) -> None:
        """Node `i` killed (SIGKILL, by the PID this fixture started): its clients see the
        connection reset and new connections refused, as after a crash."""
        self.procs[i].kill()
        self.procs[i].wait(timeout=10)

    def node_id(self, i: int) -> str:
        with self.node(i) as r:
            got = r.execute_command("CLUSTER", "MYID")
        return got.decode() if isinstance(got, bytes) else str(got)

    def owner(self, slot: int, asking: int) -> int:
        """The index of the primary that node `asking` says serves `slot`."""
        with self.node(asking) as r:
            for start, end, primary, *_ in r.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return self.ports.index(int(primary[1]))
        raise AssertionError(f"slot {slot} unowned")

    def replica_of(self, i: int) -> int:
        """The index of a replica of primary `i`."""
        with self.node(i) as r:
            for line in r.execute_command("CLUSTER", "REPLICAS", self.node_id(i)):
                text = line.decode() if isinstance(line, bytes) else str(line)
                addr = text.split()[1].split("@")[0]
                return self.ports.index(int(addr.rpartition(":")[2]))
        raise AssertionError(f"node {i} has no replica")


def _form_with_python(c: StoreCluster) -> None:
    """CLUSTER MEET every node with the first, then ADDSLOTSRANGE a third of the slots each."""
    first = c.ports[0]
    for i in range(1, NODES):
        with c.node(i) as r:
            r.execute_command("CLUSTER", "MEET", "127.0.0.1", first)
    per = SLOTS // NODES
    for i in range(NODES):
        lo, hi = i * per, (SLOTS - 1 if i == NODES - 1 else (i + 1) * per - 1)
        with c.node(i) as r:
            r.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)


def _wait_ok(c: StoreCluster, timeout_s: float = 20.0) -> None:
    """Until every node says cluster_state:ok and knows all nodes."""
    deadline = time.monotonic() + timeout_s
    while True:
        ok = 0
        for i in range(c.size):
            with c.node(i) as r:
                info = r.execute_command("CLUSTER", "INFO")
                text = info.decode() if isinstance(info, bytes) else str(info)
                if "cluster_state:ok" in text and f"cluster_known_nodes:{c.size}" in text:
                    ok += 1
        if ok == c.size:
            return
        if time.monotonic() > deadline:
            raise TimeoutError("the test cluster did not reach cluster_state:ok")
        time.sleep(0.1)


@contextlib.contextmanager
def running_cluster(
    replicas: int = 0, node_timeout_ms: int = 5000, extra_args: tuple[str, ...] = ()
) -> Iterator[StoreCluster]:
    binary = server_binary("redis")
    c = StoreCluster(replicas=replicas, node_timeout_ms=node_timeout_ms, extra_args=extra_args)
    with tempfile.TemporaryDirectory(prefix="sg-cluster-") as d:
        c.workdir = d
        try:
            for i in range(c.size):
                port = _free_cluster_port()
                node_dir = Path(d) / str(i)
                node_dir.mkdir()
                cmd = [
                    binary, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                    "--cluster-config-file", str(node_dir / "nodes.conf"), "--cluster-node-timeout", str(node_timeout_ms),
                    "--save", "", "--appendonly", "no", "--dir", str(node_dir), "--loglevel", "warning",
                    *extra_args,
                ]  # fmt: skip
                c.procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                c.ports.append(port)
            for port, proc in zip(c.ports, c.procs, strict=True):
                wait_for_port("127.0.0.1", port, 10.0, proc)
            cli = shutil.which("redis-cli")
            if cli:
                nodes = [f"127.0.0.1:{p}" for p in c.ports]
                subprocess.run(
                    [cli, "--cluster", "create", *nodes, "--cluster-replicas", str(replicas), "--cluster-yes"],
                    check=True, capture_output=True, timeout=30,
                )  # fmt: skip
                c.formed_by = "redis-cli"
            else:
                if replicas:
                    raise RuntimeError("a cluster with replicas needs redis-cli")
                _form_with_python(c)
                c.formed_by = "python"
            _wait_ok(c)
            yield c
        finally:
            for proc in c.procs:  # by PID: only the servers this fixture started
                if proc.poll() is None:
                    proc.kill()
                proc.wait(timeout=10)
