"""Gateway stages, in pipeline order: auth -> parse -> route -> guard -> quota -> cache -> lane.

Each stage is a small object with a ``name`` and ``async def on_request(ctx) -> Reply | None``:
returning a Reply short-circuits the request (e.g. a cache hit); raising GatewayError refuses it.

A stage may also have ``def prefetch(ctx) -> None``, called just before the stage *before* it runs,
to start store I/O that its own ``on_request`` then awaits (its inputs must not depend on that
previous stage; the result goes in ``ctx.prefetched``). The cache's GET so travels to the store
with the quota reservation, in one write, instead of one round trip after the other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from sidegate.core.context import Reply, RequestContext


class Stage(Protocol):
    name: str

    async def on_request(self, ctx: RequestContext) -> Reply | None: ...


Prefetch = Callable[[RequestContext], None]


def prefetchers(stages: Sequence[Stage]) -> list[Prefetch | None]:
    """For each stage, the `prefetch` of the stage after it (to call before it runs), or None."""
    return [getattr(nxt, "prefetch", None) for nxt in [*stages[1:], None]]
