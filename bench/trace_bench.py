"""Tracing's cost in the extproc process, per request, without Envoy: the gateway's step loop with
tracing off, on and unsampled (a client's unsampled traceparent, or the ratio's miss), on and
sampled; and the spans a sampled request makes after its answer (8 stages, 2 tries, the root), with
the SDK's BatchSpanProcessor in front of an exporter that drops everything (the OTLP encoding and
the gRPC send happen on the processor's thread, measured end to end by bench/run.py traced100).

Run: python -m bench.trace_bench [--iterations N]   (µs per request, median of 5 rounds)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from sidegate import config
from sidegate.core.completion import Completion
from sidegate.core.context import RequestContext
from sidegate.core.feature import collect
from sidegate.core.pipeline import Gateway
from sidegate.features.tracing.feature import TracingFeature
from sidegate.translate.base import Usage

STAGES = ("auth", "parse", "route", "guard", "quota", "cache", "lane", "count")
SAMPLED = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
UNSAMPLED = SAMPLED[:-2] + "00"


class Step:
    def __init__(self, name: str):
        self.name = name

    async def on_request(self, ctx: RequestContext) -> None:
        ctx.model = "gpt-4o-mini"


class Drop(SpanExporter):
    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def cfg(ratio: float) -> config.SidegateConfig:
    return config.parse({"providers": {"openai": {"api": "openai", "base_url": "https://api.openai.com", "auth": "none"}},
                         "models": {"gpt-4o-mini": {"routes": [{"provider": "openai"}]}},
                         "observability": {"tracing": {"endpoint": "127.0.0.1:4317", "sample_ratio": ratio}}})  # fmt: skip


def rounds(fn: Callable[[], None], n: int) -> float:
    out = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        out.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(out)


async def main(n: int) -> None:
    steps = [Step(s) for s in STAGES]
    feature = TracingFeature(cfg(0.0), exporter=Drop())
    await feature.start()
    plain, traced = Gateway(steps), Gateway(hooks=collect([*steps, feature]))

    async def gateway(gw: Gateway, tp: str) -> Any:
        return await gw.run(
            RequestContext(path="/v1/chat/completions", method="POST", headers={}, traceparent=tp, tenant="t")
        )

    loop = asyncio.get_running_loop()
    for label, gw, tp in (("gateway, tracing off", plain, SAMPLED), ("gateway, unsampled parent", traced, UNSAMPLED),
                          ("gateway, ratio miss (0)", traced, ""), ("gateway, sampled (records times)", traced, SAMPLED)):  # fmt: skip
        t0, k = time.perf_counter(), n
        for _ in range(k):
            await gateway(gw, tp)
        print(f"{label:45s} {(time.perf_counter() - t0) / k * 1e6:8.1f} µs/request", flush=True)
        await asyncio.sleep(0.05)
    out = await gateway(traced, SAMPLED)
    trace = feature.trace(
        RequestContext(path="/v1/chat/completions", method="POST", headers={}, traceparent=SAMPLED)
    )
    assert trace is not None
    now = time.perf_counter()
    for s in STAGES:
        trace.step(s, now, now + 1e-5)
    m = time.monotonic()

    def spans() -> None:
        feature.gateway_spans(trace, None)
        for attempt, final in ((1, False), (2, True)):
            feature.on_complete(Completion(meta=out.meta, provider="openai", upstream_model="gpt-4o-mini", status=200,
                                           usage=Usage(20, 10), final=final, streamed=True, attempt=attempt,
                                           started_at=m, first_byte_at=m + 0.01, ended_at=m + 0.02, chunks=3))  # fmt: skip

    per = rounds(spans, max(n // 10, 50))
    print(f"{'spans of a sampled request (11, after answer)':45s} {per:8.1f} µs/request", flush=True)
    await feature.close()
    del loop


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=5000)
    asyncio.run(main(ap.parse_args().iterations))
