"""A feature: one capability of the gateway (auth, quota, cache, ...) with every hook it needs, so
the app is one ordered list of features (:func:`sidegate.app.default_features`).

Hooks, all optional (a feature overrides only the ones it needs):

- ``on_headers(ctx) -> Reply | None``: at request-headers time, before the body is buffered (inline
  authentication). A Reply answers the client at once.
- ``prefetch(ctx) -> None``: called just before the *previous* request hook runs, to start store
  I/O that this feature's own ``on_request`` then awaits (its inputs must not depend on that
  previous hook; the result goes in ``ctx.prefetched``). The cache's GET so travels to the store
  with the quota reservation, in one write, instead of one round trip after the other.
- ``async on_request(ctx) -> Reply | None``: once per request, with the parsed body. A Reply
  short-circuits the request (e.g. a cache hit); raising GatewayError refuses it. A feature's
  ``endpoints`` say which requests it sees (completions by default; the model list is another
  endpoint): a request meets only the request hooks of its endpoint's features; ``apis`` (None:
  every client API) narrows that to some client APIs (the kept Responses answers: a chat or
  Messages completion never meets that feature).
- ``on_complete(c: Completion)``: every finished try of every lane, and the gateway's own answers.
  Synchronous, on the response path: in-memory work only (I/O goes to a task).
- ``fill(meta, client_body, response, streamed, usage)``: a try that collected its client-format
  answer hands it over. A request asks for a feature's fill with a truthy metadata value under the
  feature's ``fill_key`` (``cache_fill``, the cache's, unless the feature names its own), and only
  the features it asked are called. ``fill_bound(meta)`` bounds what the try holds (default: the
  model's cache policy); with ``fill_tail`` a stream's last event is enough (the Responses stream's
  ``response.completed`` carries the whole answer), so the try keeps no more than that.
- ``on_try(meta, api) -> TryHook | None``: a provider try of the full or try lane is starting (the
  request's metadata and the client's API); a TryHook returned here rewrites that try's client
  body before translation and its client-format answer after (the guard's redaction and PII
  restore). None, the usual answer, costs that try nothing more.
- ``trace(ctx) -> RequestTrace | None``: a request reaches the gateway (tracing): a RequestTrace
  returned here (sampled requests only) is told every request hook's timing and the gateway's
  outcome. Only the first feature that has it is asked; None, the usual answer, costs nothing more.
- ``async start()`` / ``async close()``: background work, started before serving in list order and
  closed in reverse.
- ``reconfigure(cfg)``: a new routing version is in use (sidegate/core/live.py): `cfg` is the whole
  configuration with its routing document (models, providers, prices, cache and guard defaults).
  Called synchronously, in list order, before any request can pick that version: the feature
  rebuilds what it derived from the routing sections (tables, prices) and keeps its store state.
  A request routed with another kept version carries that version's config in ``ctx.config``
  (None: the latest, the one the feature was last told).

Why a base class and not a Protocol: a Protocol cannot have optional members, and a feature that
has no completion hook must not be called for every completion. The base class documents every
hook in one place and gives each a no-op; :func:`collect` sees which ones a feature really
overrides, once, when the app is built, so the request path calls only those (no per-request
``getattr``, no no-op calls). Any object with a ``name`` and some of these methods works too
(tests use small stand-ins).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from sidegate.core.completion import Completion, CompletionHook
from sidegate.core.context import Reply, RequestContext
from sidegate.core.intake import COMPLETIONS
from sidegate.errors import Api
from sidegate.translate.base import Usage

log = logging.getLogger("sidegate.extproc")

OnHeaders = Callable[[RequestContext], Reply | None]
Prefetch = Callable[[RequestContext], None]
OnRequest = Callable[[RequestContext], Awaitable[Reply | None]]
Fill = Callable[[dict[str, Any], dict[str, Any] | None, bytes, bool, Usage | None], None]
FillBound = Callable[[dict[str, Any]], int]
CACHE_FILL = "cache_fill"
"""The metadata key of the first feature that filled (the cache): the default `fill_key`."""
Lifecycle = Callable[[], Awaitable[None]]
Reconfigure = Callable[[Any], None]
"""`reconfigure(cfg: SidegateConfig)` (typed Any here: core's feature module stays config-free)."""


class TryHook(Protocol):
    """One feature's work inside one provider try, in the client's format on both sides."""

    def request(self, body: dict[str, Any]) -> None:
        """The client's parsed body, before it is translated for the provider (may be changed)."""

    def response(self, body: bytes) -> bytes:
        """A whole successful answer, translated to the client's format."""

    def stream(self, chunk: bytes, end: bool) -> bytes:
        """The next translated piece of a streamed answer (`end`: the last one)."""


OnTry = Callable[[dict[str, Any], Api], TryHook | None]


class RequestTrace(Protocol):
    """A sampled request's record of its pass through the gateway (the tracing feature's)."""

    def step(self, name: str, started: float, ended: float) -> None:
        """One request hook ran from `started` to `ended` (time.perf_counter())."""

    def end(self, ctx: RequestContext, reply: Reply | None) -> None:
        """The gateway is done: `reply` is its own answer, None when the request goes on to a provider."""


OnTrace = Callable[[RequestContext], RequestTrace | None]


class Feature:
    name: str = ""
    endpoints: frozenset[str] = frozenset({COMPLETIONS})
    """The endpoints whose requests this feature's request hooks see (`RequestContext.endpoint`)."""
    apis: frozenset[Api] | None = None
    """The client APIs whose requests they see (`RequestContext.api`); None: every one."""

    def on_headers(self, ctx: RequestContext) -> Reply | None:
        return None

    def prefetch(self, ctx: RequestContext) -> None:
        return None

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        return None

    def on_complete(self, c: Completion) -> None:
        return None

    def fill(
        self, meta: dict[str, Any], client_body: dict[str, Any] | None, response: bytes, streamed: bool,
        usage: Usage | None = None,
    ) -> None:  # fmt: skip
        return None

    fill_key: str = CACHE_FILL
    """The metadata key by which a request asks a try to collect its answer for this feature's `fill`."""
    fill_tail: bool = False
    """A streamed answer's last event is all this feature's `fill` needs."""

    def fill_bound(self, meta: dict[str, Any]) -> int:
        return 0

    def on_try(self, meta: dict[str, Any], api: Api) -> TryHook | None:
        return None

    def trace(self, ctx: RequestContext) -> RequestTrace | None:
        return None

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def reconfigure(self, cfg: Any) -> None:
        return None


def hook(feature: object, name: str) -> Any:
    """The feature's own `name` hook (bound), or None when it has none or only the no-op default."""
    bound = getattr(feature, name, None)
    if bound is None or getattr(bound, "__func__", None) is getattr(Feature, name):
        return None
    return bound


class Filling(NamedTuple):
    """One feature's fill: which metadata key asks for it, and what its try must keep."""

    key: str
    fill: Fill
    tail: bool = False
    bound: FillBound | None = None
    """What a try may hold for it (None: the model's cache policy, the cache's own bound)."""


def filling(feature: object) -> Filling | None:
    fill = hook(feature, "fill")
    if fill is None:
        return None
    key = str(getattr(feature, "fill_key", CACHE_FILL))
    return Filling(key, fill, bool(getattr(feature, "fill_tail", False)), hook(feature, "fill_bound"))


class Step(NamedTuple):
    """One request hook, with the prefetch of the step after it (to call before this one runs)."""

    name: str
    on_request: OnRequest
    prefetch_next: Prefetch | None


@dataclass(frozen=True)
class Hooks:
    """The hooks of an ordered list of features, by kind, in list order."""

    on_headers: tuple[OnHeaders, ...] = ()
    steps: tuple[Step, ...] = ()
    """The request hooks of a completion, in list order."""
    steps_by_endpoint: dict[str, tuple[Step, ...]] = field(default_factory=dict)
    """The request hooks of every endpoint, in list order (`steps` is the completions' entry)."""
    steps_by_api: dict[tuple[str, Api], tuple[Step, ...]] = field(default_factory=dict)
    """The same for each client API of an endpoint, where some feature sees only some APIs."""
    on_complete: list[CompletionHook] = field(default_factory=list)
    fills: tuple[Filling, ...] = ()
    on_try: tuple[OnTry, ...] = ()
    tracer: OnTrace | None = None
    """The first feature's `trace` hook (one tracer per app)."""
    starts: tuple[Lifecycle, ...] = ()
    closes: tuple[Lifecycle, ...] = ()
    reconfigures: tuple[Reconfigure, ...] = ()
    """The features' `reconfigure` hooks, in list order (a new routing version)."""


def _sees(feature: object, endpoint: str, api: Api | None) -> bool:
    if endpoint not in getattr(feature, "endpoints", Feature.endpoints):
        return False
    apis = getattr(feature, "apis", None)
    return api is None or apis is None or api in apis


def _steps(features: Sequence[object], endpoint: str, api: Api | None = None) -> tuple[Step, ...]:
    requesting = [f for f in features if hook(f, "on_request") and _sees(f, endpoint, api)]
    return tuple(Step(str(getattr(f, "name", "")), hook(f, "on_request"), hook(nxt, "prefetch"))
                 for f, nxt in zip(requesting, [*requesting[1:], None], strict=False))


def collect(features: Sequence[object]) -> Hooks:
    endpoints = {e for f in features for e in getattr(f, "endpoints", Feature.endpoints)} | {COMPLETIONS}
    by_endpoint = {e: _steps(features, e) for e in sorted(endpoints)}
    by_api = {}
    if any(getattr(f, "apis", None) is not None for f in features):
        by_api = {(e, api): _steps(features, e, api) for e in sorted(endpoints) for api in Api}
    return Hooks(
        on_headers=tuple(h for f in features if (h := hook(f, "on_headers"))),
        steps=by_endpoint[COMPLETIONS],
        steps_by_endpoint=by_endpoint,
        steps_by_api=by_api,
        on_complete=[h for f in features if (h := hook(f, "on_complete"))],
        fills=tuple(h for f in features if (h := filling(f))),
        on_try=tuple(h for f in features if (h := hook(f, "on_try"))),
        tracer=next((h for f in features if (h := hook(f, "trace"))), None),
        starts=tuple(h for f in features if (h := hook(f, "start"))),
        closes=tuple(h for f in features if (h := hook(f, "close"))),
        reconfigures=tuple(h for f in features if (h := hook(f, "reconfigure"))),
    )


class Fillers:
    """The fill hooks as the per-try stage's one filler: a try collects its answer when its
    request's metadata asks any of them, and hands it to the ones asked."""

    def __init__(self, fills: Sequence[Fill | Filling]):
        self.fillings = tuple(f if isinstance(f, Filling) else Filling(CACHE_FILL, f) for f in fills)

    def asked(self, meta: dict[str, Any]) -> tuple[Filling, ...]:
        return tuple(f for f in self.fillings if meta.get(f.key))

    def fill(
        self, meta: dict[str, Any], client_body: dict[str, Any] | None, response: bytes, streamed: bool,
        usage: Usage | None = None,
    ) -> None:  # fmt: skip
        for f in self.fillings:
            if meta.get(f.key):
                f.fill(meta, client_body, response, streamed, usage)


async def close_each(*steps: Callable[[], Any]) -> None:
    """A feature's shutdown steps, each on its own: one that fails is logged and never keeps the
    next from running (a semantic index that fails to close must not leave cache fills undrained)."""
    for step in steps:
        try:
            result = step()
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("shutdown step failed")
