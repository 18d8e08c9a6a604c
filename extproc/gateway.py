"""The gateway pipeline: runs the stages once per client request (router-level ext_proc).

Pure of gRPC: :meth:`Gateway.run` takes a :class:`RequestContext` and returns an :class:`Outcome`,
which the servicer turns into Envoy messages.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from extproc.context import Reply, RequestContext
from extproc.stages import Stage
from sidegate.errors import GatewayError, render

log = logging.getLogger("sidegate.gateway")


@dataclass(slots=True)
class Forward:
    """Let the request go on to the router: route header, metadata, maybe a rewritten body."""

    route: str
    meta: dict[str, Any]
    body: bytes | None = None
    response_headers: dict[str, str] = field(default_factory=dict)


Outcome = Forward | Reply


class Gateway:
    def __init__(self, stages: Sequence[Stage]):
        self.stages = list(stages)

    async def run(self, ctx: RequestContext) -> Outcome:
        try:
            for stage in self.stages:
                reply = await stage.on_request(ctx)
                if reply is not None:
                    return reply
        except GatewayError as err:
            headers = {"content-type": "application/json", **ctx.response_headers, **err.headers}
            return Reply(err.status, render(ctx.api, err), headers)
        body = orjson.dumps(ctx.body) if ctx.body_changed else None
        return Forward(route=ctx.model, meta=ctx.upstream_meta(), body=body, response_headers=ctx.response_headers)
