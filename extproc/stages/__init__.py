"""Gateway stages, in pipeline order: auth -> parse -> guard -> quota -> cache -> route.

Each stage is a small object with a ``name`` and ``async def on_request(ctx) -> Reply | None``:
returning a Reply short-circuits the request (e.g. a cache hit); raising GatewayError refuses it.
"""

from __future__ import annotations

from typing import Protocol

from extproc.context import Reply, RequestContext


class Stage(Protocol):
    name: str

    async def on_request(self, ctx: RequestContext) -> Reply | None: ...
