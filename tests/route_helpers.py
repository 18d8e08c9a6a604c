"""Shared pieces of the routing-policy tests (tests/unit/test_route_policy.py, test_route_latency.py)."""

from __future__ import annotations

from typing import Any

import orjson

from sidegate import config
from sidegate.config import BreakerConfig, SidegateConfig
from sidegate.core.completion import Completion
from sidegate.core.context import RequestContext
from sidegate.errors import Api
from sidegate.features.route.breaker import Breaker
from sidegate.features.route.latency import LatencyBoard
from sidegate.features.route.policy import Policy


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


PROVIDERS = {
    p: {"api": "openai", "base_url": f"http://{p}", "api_key_env": f"K_{p.upper()}"} for p in ("a", "b", "c")
}


def make_cfg(models: dict[str, Any], prices: dict[str, Any] | None = None, **services: Any) -> SidegateConfig:
    return config.parse({
        "providers": PROVIDERS, "models": models, "quota": {"prices": prices or {}},
        **({"services": services} if services else {}),
    }, env={"K_A": "ka", "K_B": "kb", "K_C": "kc"})  # fmt: skip


COST = {
    "routes": [{"provider": "a", "model": "big"}, {"provider": "b", "model": "small"}],
    "policy": {"kind": "cost"},
}
PRICES = {
    "big": {"input_per_mtok": 5, "output_per_mtok": 15},
    "small": {"input_per_mtok": 0.15, "output_per_mtok": 0.6},
}


def ctx_for(model: str, tenant: str = "acme", headers: dict[str, str] | None = None, body: dict[str, Any] | None = None,
            api: Api = Api.OPENAI) -> RequestContext:  # fmt: skip
    body = body if body is not None else {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return RequestContext(path="/v1/chat/completions", method="POST", headers=headers or {}, api=api, tenant=tenant,
                          body=body, raw_body=orjson.dumps(body), model=model)  # fmt: skip


def policy(clock: Clock | None = None, wall: Clock | None = None) -> Policy:
    clock = clock or Clock()
    return Policy(Breaker(clock), LatencyBoard(clock=wall or Clock(1_700_000_000.0)), clock=clock)


def choose(p: Policy, cfg: SidegateConfig, ctx: RequestContext) -> str:
    return p.choose(ctx, cfg.models[ctx.model], cfg)


def eject(p: Policy, provider: str, model: str) -> None:
    p.breaker.record(provider, 429, BreakerConfig(), retry_after_s=30, model=model)


LAT = {"routes": [{"provider": "a"}, {"provider": "b"}], "policy": {"kind": "latency"}}


def done(
    provider: str, ttft_s: float, status: int = 200, model: str = "m", streamed: bool = True
) -> Completion:
    return Completion(meta={"model": model, "policy": "latency"}, provider=provider, upstream_model=model, status=status,
                      usage=None, final=True, streamed=streamed, started_at=10.0, first_byte_at=10.0 + ttft_s,
                      ended_at=10.5 + ttft_s, chunks=3)  # fmt: skip


class FakeRedis:
    """The hash commands the board's sync uses, pipelined."""

    def __init__(self) -> None:
        self.hashes: dict[str, dict[bytes, bytes]] = {}

    def pipeline(self, transaction: bool = False) -> FakeRedis.Pipe:
        return FakeRedis.Pipe(self)

    class Pipe:
        def __init__(self, r: FakeRedis) -> None:
            self.r, self.ops = r, []

        def hset(self, key: str, field: str, value: bytes) -> None:
            self.ops.append(lambda: self.r.hashes.setdefault(key, {}).__setitem__(field.encode(), value) or 1)

        def pexpire(self, key: str, ms: int) -> None:
            self.ops.append(lambda: True)

        def hgetall(self, key: str) -> None:
            self.ops.append(lambda: dict(self.r.hashes.get(key, {})))

        def hdel(self, key: str, field: bytes) -> None:
            self.ops.append(lambda: self.r.hashes.get(key, {}).pop(field, None) and 1)

        async def execute(self) -> list[Any]:
            return [op() for op in self.ops]
