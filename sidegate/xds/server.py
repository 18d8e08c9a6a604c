"""The ADS server (state of the world): one stream per Envoy, pushing the current snapshot in
make-before-break order (contract 3, docs/control-plane.md "Live routing over xDS"):

1. CDS with the old and the new clusters (a changed cluster in its new form), ACK awaited;
2. LDS, only when the listener itself changed, ACK awaited;
3. RDS (the routes of the new version, which reference only clusters Envoy now has), ACK awaited;
4. CDS with the new clusters alone: a removed provider's cluster goes only once no route names it
   (Envoy drains its connections; requests in flight on it finish).

A NACK (Envoy's `error_detail`) is logged and counted; that stream stops at that step and keeps the
last ACKed state (Envoy keeps serving it too), and the snapshot is not offered again until a new
one comes. Each stream tracks what its Envoy ACKed per type; a reconnecting Envoy gets the current
state, its first CDS push keeping the clusters it reports having (a cluster set this server served,
by version) until the new routes are ACKed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest, DiscoveryResponse
from google.protobuf import any_pb2
from prometheus_client import Counter, Gauge

from sidegate.trust import Token
from sidegate.xds.resources import CLUSTER, LISTENER, ROUTE, SHORT, Snapshot, digest

log = logging.getLogger("sidegate.xds")

NACKS = Counter("sidegate_xds_nacks_total", "xDS responses Envoy refused (NACK), by type", ["type"])
PUSHES = Counter("sidegate_xds_pushes_total", "xDS responses sent to Envoy, by type", ["type"])
ACKED = Gauge(
    "sidegate_xds_acked_version", "The routing document version Envoy last ACKed, by type", ["type"]
)

ACK_TIMEOUT_S = 30.0
"""A push Envoy neither ACKs nor NACKs within this counts as refused (the stream is likely gone)."""

Resources = dict[str, any_pb2.Any]
REMEMBERED = 32
REMOVAL_GRACE_S = 0.3
"""Between Envoy's ACK of the routes that stopped naming a cluster and the cluster's removal: the
ACK comes from Envoy's main thread while its workers apply the routes a moment later, and tries
already under way on the cluster (a retry re-picks its cluster from the route it started with)
finish in the meantime. Without it, one request in a few thousand under load met a 503 (cluster
not found) while a provider was removed (tests/e2e/test_xds_no_drain.py). Short enough that a
removal still applies well within a second."""


class Stream:
    """One Envoy's ADS stream: what it subscribed to, what it ACKed, the push in flight."""

    _nonces = itertools.count(1)

    def __init__(self, server: AdsServer, context: grpc.aio.ServicerContext) -> None:
        self.server, self.context = server, context
        self.subscribed: dict[str, list[str]] = {}
        self.acked: dict[str, Resources] = {}
        self.acked_version: dict[str, int] = {}
        self.resend: set[str] = set()
        self.pending: dict[str, tuple[str, asyncio.Future[str]]] = {}
        self.wake = asyncio.Event()
        self.refused: str | None = None
        """The key of the snapshot Envoy refused (not offered again)."""
        self.envoy_version = 0
        """The highest routing version this Envoy said it has (an Envoy that outlived a server restart)."""
        self.holding = False

    async def read(self, requests: AsyncIterator[DiscoveryRequest]) -> None:
        async for req in requests:
            t = req.type_url
            if t not in SHORT:
                continue
            self.subscribed[t] = list(req.resource_names)
            pending = self.pending.get(t)
            if req.response_nonce:
                if pending is not None and pending[0] == req.response_nonce:
                    del self.pending[t]
                    if not pending[1].done():
                        pending[1].set_result(
                            req.error_detail.message if req.HasField("error_detail") else ""
                        )
                continue  # (an older nonce: superseded, nothing to do)
            head = req.version_info.partition(".")[0]
            if head.isdigit():
                self.envoy_version = max(self.envoy_version, int(head))
            if t in self.acked:  # a new subscription of a type Envoy had: it wants the state again
                self.resend.add(t)
            elif t == CLUSTER and req.version_info:
                # Envoy reconnected with the clusters of an earlier stream, which its routes may still
                # name: known, they are what this stream's first CDS push keeps beside the new ones
                # (a union, then routes, then the final set: make before break across reconnects too).
                had = self.server.sent_clusters.get(req.version_info)
                if had is not None:
                    self.acked[CLUSTER] = had
            self.wake.set()

    async def drive(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            snap = self.server.target
            if snap is not None and snap.version == 0 and self.envoy_version > 0:
                # The file's own document (the store could not be read when this server started) is
                # never pushed over a live version Envoy already has: that would undo live changes
                # and drop live providers' clusters. Envoy keeps serving its state until the store answers.
                if not self.holding:
                    log.warning("xDS stream: Envoy has routing version %d; waiting for the store before any push",
                                self.envoy_version)  # fmt: skip
                self.holding = True
                continue
            self.holding = False
            if snap is not None and (snap.key != self.refused or self.resend):
                try:
                    await self.converge(snap)
                except Exception:  # the stream broke mid-push: Envoy reconnects with a new one
                    log.exception("xDS stream: push failed")
                    return

    def _want(self, t: str, snap: Snapshot) -> Resources:
        have = snap.resources[t]
        names = self.subscribed.get(t) or []
        if t == ROUTE and names:  # RDS names the route configurations it wants
            return {n: have[n] for n in names if n in have}
        return have

    async def converge(self, snap: Snapshot) -> None:
        """Bring this Envoy to `snap` in make-before-break order (module docstring)."""
        steps: list[tuple[str, Resources]] = []
        clusters = self._want(CLUSTER, snap) if CLUSTER in self.subscribed else None
        if clusters is not None:
            have = self.acked.get(CLUSTER)
            if have is None or CLUSTER in self.resend:
                steps.append((CLUSTER, clusters))
            elif have != clusters and {**have, **clusters} != have:
                steps.append((CLUSTER, {**have, **clusters}))
        for t in (LISTENER, ROUTE):
            if t in self.subscribed:
                want = self._want(t, snap)
                if self.acked.get(t) != want or t in self.resend:
                    steps.append((t, want))
        for t, resources in steps:
            if not await self.push(t, resources, snap):
                self.refused = snap.key
                return
        # last: the clusters no route names any more go, after a grace (REMOVAL_GRACE_S)
        if clusters is not None and set(self.acked.get(CLUSTER) or ()) - set(clusters):
            await asyncio.sleep(REMOVAL_GRACE_S)
        if (
            clusters is not None
            and self.acked.get(CLUSTER) != clusters
            and not await self.push(CLUSTER, clusters, snap)
        ):
            self.refused = snap.key
            return
        self.refused = None
        self.server.converged(snap)

    async def push(self, t: str, resources: Resources, snap: Snapshot) -> bool:
        """Send one response and wait for Envoy's ACK (True) or NACK (False)."""
        self.resend.discard(t)
        nonce = str(next(self._nonces))
        version = f"{snap.version}.{digest(resources)}"
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.pending[t] = (nonce, fut)
        started = time.monotonic()
        await self.context.write(
            DiscoveryResponse(
                version_info=version, resources=list(resources.values()), type_url=t, nonce=nonce
            )
        )
        PUSHES.labels(SHORT[t]).inc()
        if t == CLUSTER:
            self.server.remember_clusters(version, resources)
        try:
            error = await asyncio.wait_for(fut, ACK_TIMEOUT_S)
        except TimeoutError:
            error = f"no answer within {ACK_TIMEOUT_S:g}s"
        if error:
            NACKS.labels(SHORT[t]).inc()
            log.error("Envoy refused %s version %s (routing document %d): %s; it keeps the last accepted one",
                      SHORT[t], version, snap.version, error)  # fmt: skip
            return False
        self.acked[t] = resources
        self.acked_version[t] = snap.version
        ACKED.labels(SHORT[t]).set(snap.version)
        log.info(
            "Envoy ACKed %s version %s (%d resources, %.0f ms)",
            SHORT[t],
            version,
            len(resources),
            (time.monotonic() - started) * 1000,
        )
        return True


class AdsServer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """Serves `target` (set by the config follower) to every connected Envoy."""

    def __init__(self, token: Token | None) -> None:
        self.token = token
        self.target: Snapshot | None = None
        self.streams: set[Stream] = set()
        self.ready = asyncio.Event()
        """Set once a snapshot exists (Envoy's first requests wait for it)."""
        self.acked_key: str | None = None
        self.sent_clusters: dict[str, Resources] = {}
        """The last `REMEMBERED` cluster sets served, by CDS version string: what a reconnecting
        Envoy (whose request names the version it has) may still route to."""

    def remember_clusters(self, version: str, resources: Resources) -> None:
        self.sent_clusters.pop(version, None)
        self.sent_clusters[version] = resources
        while len(self.sent_clusters) > REMEMBERED:
            del self.sent_clusters[next(iter(self.sent_clusters))]

    def set_target(self, snap: Snapshot) -> bool:
        """A new snapshot to serve; False when it renders exactly like the current one."""
        if self.target is not None and self.target.key == snap.key:
            return False
        clusters = snap.resources[CLUSTER]
        self.remember_clusters(f"{snap.version}.{digest(clusters)}", clusters)
        self.target = snap
        self.ready.set()
        for s in self.streams:
            s.wake.set()
        return True

    def converged(self, snap: Snapshot) -> None:
        self.acked_key = snap.key

    async def StreamAggregatedResources(
        self, request_iterator: AsyncIterator[DiscoveryRequest], context: Any
    ) -> None:
        if self.token is not None and not self.token.valid_metadata(context.invocation_metadata()):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong internal token")
        await self.ready.wait()
        stream = Stream(self, context)
        self.streams.add(stream)
        driver = asyncio.create_task(stream.drive())
        try:
            await stream.read(request_iterator)
        finally:
            self.streams.discard(stream)
            driver.cancel()
            for _, fut in stream.pending.values():
                if not fut.done():
                    fut.cancel()

    async def DeltaAggregatedResources(self, request_iterator: Any, context: Any) -> None:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "Sidegate's xDS server speaks state of the world (ads_config.api_type GRPC)",
        )
