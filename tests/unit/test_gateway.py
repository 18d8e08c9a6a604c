"""The gateway pipeline's order: a stage's prefetch runs just before the stage before it."""

from __future__ import annotations

import asyncio

from sidegate.core.context import Reply, RequestContext
from sidegate.core.pipeline import Forward, Gateway


class Step:
    def __init__(self, name: str, log: list[str], refuse: bool = False, prefetch: bool = False):
        self.name, self.log, self.refuse = name, log, refuse
        if prefetch:
            self.prefetch = lambda ctx: log.append(f"{name}.prefetch")

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        self.log.append(self.name)
        await asyncio.sleep(0)
        return Reply(429, b"{}", {}) if self.refuse else None


def run(*stages: Step) -> object:
    ctx = RequestContext(path="/v1/chat/completions", method="POST", headers={})
    return asyncio.run(Gateway(list(stages)).run(ctx))


def test_prefetch_runs_before_the_previous_stage():
    log: list[str] = []
    out = run(Step("parse", log), Step("quota", log), Step("cache", log, prefetch=True), Step("lane", log))
    assert isinstance(out, Forward)
    assert log == ["parse", "cache.prefetch", "quota", "cache", "lane"]


def test_a_refusal_before_a_prefetching_stage_stops_the_pipeline():
    log: list[str] = []
    out = run(Step("quota", log, refuse=True), Step("cache", log, prefetch=True))
    assert isinstance(out, Reply) and out.status == 429
    assert log == ["cache.prefetch", "quota"]
