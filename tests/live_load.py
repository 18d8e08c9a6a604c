"""Steady load on several replicas through the official SDKs, every result recorded; long streams.

`Load` runs a few worker threads, each bound to one replica, sending a request every `pause_s`
(after the previous one's answer), bounded in count and time: openai and anthropic SDK clients,
non-streamed and streamed in turn, over a list of models. Nothing is retried (``max_retries=0``): a
request that fails is a failure. `LongStream` is one paced stream (tests/live_helpers.py: the
`<model>-long` twins) that must arrive whole.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import anthropic
import openai
from live_helpers import LONG_CHUNKS, provider_of

MSG = [{"role": "user", "content": "hello there"}]


@dataclass
class Outcome:
    replica: int
    model: str
    sdk: str  # openai | anthropic
    stream: bool
    started: float  # time.monotonic()
    ended: float
    status: int = 200  # the HTTP status of a refusal; 0: no answer at all
    provider: str | None = None
    finish: str | None = None
    chunks: int = 0
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200 and not self.error and self.provider is not None and self.finish is not None


def _openai(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=20)


def _anthropic(url: str, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key=key, max_retries=0, timeout=20)


def call(oc: openai.OpenAI, ac: anthropic.Anthropic, out: Outcome) -> Outcome:
    """One request as `out` describes it (model, sdk, stream); fills in the rest of `out`."""
    try:
        if out.sdk == "openai" and not out.stream:
            r = oc.chat.completions.create(model=out.model, messages=MSG)  # type: ignore[arg-type]
            out.provider, out.finish, out.chunks = (
                provider_of(r.choices[0].message.content),
                r.choices[0].finish_reason,
                1,
            )
        elif out.sdk == "openai":
            text, finish = [], None
            for chunk in oc.chat.completions.create(model=out.model, messages=MSG, stream=True,  # type: ignore[arg-type]
                                                    stream_options={"include_usage": True}):  # fmt: skip
                out.chunks += 1
                for c in chunk.choices:
                    text.append(c.delta.content or "")
                    finish = c.finish_reason or finish
            out.provider, out.finish = provider_of("".join(text)), finish
        elif not out.stream:
            m = ac.messages.create(model=out.model, max_tokens=256, messages=MSG)  # type: ignore[arg-type]
            out.provider = provider_of("".join(b.text for b in m.content if b.type == "text"))
            out.finish, out.chunks = m.stop_reason, 1
        else:
            with ac.messages.stream(model=out.model, max_tokens=256, messages=MSG) as s:  # type: ignore[arg-type]
                for _ in s.text_stream:
                    out.chunks += 1
                m = s.get_final_message()
            out.provider = provider_of("".join(b.text for b in m.content if b.type == "text"))
            out.finish = m.stop_reason
    except (openai.APIStatusError, anthropic.APIStatusError) as e:
        out.status, out.error = e.status_code, str(e)[:300]
    except Exception as e:  # a transport failure, a broken stream: all failures here
        out.status, out.error = 0, f"{type(e).__name__}: {e}"[:300]
    out.ended = time.monotonic()
    return out


@dataclass
class Load:
    """Steady traffic: `workers` threads (worker w on replica w % len(urls)), each request followed
    by `pause_s`; stops at `stop()`, after `max_requests` in all or after `max_s`."""

    urls: list[str]
    key: str
    models: list[str]
    workers: int = 4
    pause_s: float = 0.015
    max_requests: int = 4000
    max_s: float = 120.0
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Load:
        self._started = time.monotonic()
        for w in range(self.workers):
            t = threading.Thread(target=self._work, args=(w,), name=f"live-load-{w}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _work(self, w: int) -> None:
        replica = w % len(self.urls)
        oc, ac = _openai(self.urls[replica], self.key), _anthropic(self.urls[replica], self.key)
        i = 0
        while not self._stop.is_set() and time.monotonic() - self._started < self.max_s:
            with self._lock:
                if len(self.outcomes) >= self.max_requests:
                    return
            model = self.models[(i + w) % len(self.models)]
            sdk = "anthropic" if (i // 2) % 3 == 2 else "openai"  # a third through the anthropic SDK
            out = call(
                oc, ac, Outcome(replica, model, sdk, stream=i % 2 == 1, started=time.monotonic(), ended=0.0)
            )
            with self._lock:
                self.outcomes.append(out)
            i += 1
            time.sleep(self.pause_s)

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for t in self._threads:
            t.join(30)
        return self.outcomes

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)

    def failures(self) -> list[Outcome]:
        return [o for o in self.snapshot() if not o.ok]

    def served(self, model: str, after: float, replica: int | None = None) -> Counter[str | None]:
        """Providers that served `model` for requests started after `after` (monotonic)."""
        return Counter(o.provider for o in self.snapshot()
                       if o.model == model and o.started > after and (replica is None or o.replica == replica))  # fmt: skip

    def summary(self) -> dict[str, Any]:
        outs = self.snapshot()
        span = (max(o.ended for o in outs) - min(o.started for o in outs)) if outs else 0.0
        return {"requests": len(outs), "failed": sum(not o.ok for o in outs), "seconds": round(span, 2),
                "streams": sum(o.stream for o in outs), "anthropic_sdk": sum(o.sdk == "anthropic" for o in outs)}  # fmt: skip


class LongStream(threading.Thread):
    """One paced stream (LONG_CHUNKS events over ~2 s) through the openai SDK, started at once;
    `result()` waits for it. Complete = every event, the finish reason, the whole answer text."""

    def __init__(self, url: str, key: str, model: str, replica: int = 0) -> None:
        super().__init__(name=f"long-{model}", daemon=True)
        self.url, self.key = url, key
        self.outcome = Outcome(replica, model, "openai", True, time.monotonic(), 0.0)
        self.start()

    def run(self) -> None:
        call(_openai(self.url, self.key), _anthropic(self.url, self.key), self.outcome)

    def result(self, timeout_s: float = 30.0) -> Outcome:
        self.join(timeout_s)
        return self.outcome

    @property
    def complete(self) -> bool:
        # LONG_CHUNKS text events; the usage chunk and the role/finish chunks may add a few.
        return self.outcome.ok and self.outcome.finish == "stop" and self.outcome.chunks >= LONG_CHUNKS
