"""extproc's graceful stop ends as soon as no request stream is left, even while an RPC that is not
a request stream stays open (after a token rotation Envoy may open an access-log stream the
stop's close() never saw; a health `Watch` is such an RPC too and is used here)."""

from __future__ import annotations

import asyncio
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from extproc.main import serve
from sidegate import config, trust
from sidegate.ports import free_port


def _cfg() -> config.SidegateConfig:
    return config.parse(
        {
            "services": {"auth": "ext_authz"},  # the gRPC front; no store for inline auth here
            "providers": {"openai": {"api": "openai", "base_url": "http://127.0.0.1:9", "api_key_env": "K"}},
            "models": {"gpt-4o-mini": {"routes": [{"provider": "openai"}]}},
        },
        env={"K": "sk-test"},
    )


def test_a_long_lived_rpc_that_is_no_request_stream_does_not_hold_the_stop() -> None:
    async def body() -> float:
        port = free_port()
        server, service = await serve(_cfg(), None, "127.0.0.1", port, trust.Token(trust.generate()))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
            first = await asyncio.wait_for(watch.read(), 10)
            assert first.status == health_pb2.HealthCheckResponse.SERVING  # the stream is open
            started = time.monotonic()
            await asyncio.wait_for(service.stop_serving(server, grace_s=20.0), 30)
            took = time.monotonic() - started
            watch.cancel()
        await service.aclose()
        return took

    took = asyncio.run(body())
    assert took < 5, f"the stop waited {took:.1f} s for an RPC that is no request stream"
