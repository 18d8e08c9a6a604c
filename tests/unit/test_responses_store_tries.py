"""The per-try stage's fill mechanism, generalised: a request asks each feature's fill by its own
metadata key (the cache's fill never sees an answer only the kept-responses feature asked for),
the try holds no more than the largest bound asked, and a fill that needs only a stream's last
event gets that event even when the whole stream is far larger than its bound."""

from __future__ import annotations

from typing import Any

import orjson

from sidegate import config
from sidegate.core.feature import Feature, Fillers, collect
from sidegate.core.tries import TryStage


def cfg() -> config.SidegateConfig:
    return config.parse({
        "providers": {"openai": {"api": "openai", "base_url": "https://api.openai.com"}},
        "models": {"gpt-4o": {"routes": [{"provider": "openai"}], "cache": {"exact": True, "max_entry_bytes": 4096}}},
    }, env={})  # fmt: skip


class Recorder(Feature):
    def __init__(self, name: str, key: str | None = None, tail: bool = False, bound: int = 0):
        self.name = name
        if key is not None:
            self.fill_key = key
        self.fill_tail = tail
        self.bound = bound
        self.filled: list[tuple[bytes, bool]] = []

    def fill(
        self, meta: dict[str, Any], client_body: Any, response: bytes, streamed: bool, usage: Any = None
    ) -> None:
        self.filled.append((response, streamed))

    def fill_bound(self, meta: dict[str, Any]) -> int:
        return self.bound


class CacheLike(Feature):
    """A fill with no key of its own and no bound: the cache's (`cache_fill`, the cache policy)."""

    name = "cache"

    def __init__(self) -> None:
        self.filled: list[bytes] = []

    def fill(
        self, meta: dict[str, Any], client_body: Any, response: bytes, streamed: bool, usage: Any = None
    ) -> None:
        self.filled.append(response)


def event(i: int) -> bytes:
    return b"event: e\ndata: " + orjson.dumps({"i": i, "pad": "x" * 100}) + b"\n\n"


def stage(*features: Feature) -> TryStage:
    hooks = collect(features)
    return TryStage(cfg(), filler=Fillers(hooks.fills))


def streamed(t: Any, chunks: list[bytes]) -> None:
    t.response_headers(200, {":status": "200", "content-type": "text/event-stream"})
    t.stream_tx = Passthrough()
    for c in chunks[:-1]:
        t.response_chunk(c, False)
    t.response_chunk(chunks[-1], True)


class Passthrough:
    """A stream translator that changes nothing (the fill mechanism is what is under test)."""

    usage = None
    done = True

    def feed(self, chunk: bytes) -> bytes:
        return chunk

    def finish(self) -> bytes:
        return b""


def test_each_fill_is_called_only_when_its_key_asked() -> None:
    cache, kept = CacheLike(), Recorder("kept", "keep_it", tail=True, bound=10_000)
    up = stage(cache, kept)
    t = up.start_try({"api": "openai", "model": "gpt-4o", "keep_it": True}, "provider.openai", 1)
    assert t.collect and t.collect_limit == 10_000 and t.collect_tail
    t.response_headers(200, {":status": "200", "content-type": "application/json"})
    t.response_body(b'{"id":"c1","object":"chat.completion","choices":[],"usage":null}')
    assert len(kept.filled) == 1 and cache.filled == []
    both = up.start_try(
        {"api": "openai", "model": "gpt-4o", "keep_it": True, "cache_fill": "k"}, "provider.openai", 1
    )
    assert both.collect_limit == 10_000 and not both.collect_tail  # the cache needs the whole stream
    none = up.start_try({"api": "openai", "model": "gpt-4o"}, "provider.openai", 1)
    assert not none.collect and none.collect_limit == 0
    cache_only = up.start_try({"api": "openai", "model": "gpt-4o", "cache_fill": "k"}, "provider.openai", 1)
    assert cache_only.collect_limit == 4096  # the model's cache policy, as before


def test_a_tail_fill_keeps_the_last_event_of_a_long_stream() -> None:
    kept = Recorder("kept", "keep_it", tail=True, bound=400)
    t = stage(kept).start_try({"api": "openai", "model": "gpt-4o", "keep_it": True}, "provider.openai", 1)
    chunks = [event(i) for i in range(50)]
    chunks[10] = event(10) + event(11)[:30]  # an event cut across chunks
    chunks[11] = event(11)[30:]
    chunks[-1] = event(48)[:-2] + b"\n\n" + event(49)  # the last two in one chunk
    streamed(t, chunks)
    assert len(t.collected) <= 400
    ((got, was_streamed),) = kept.filled
    assert was_streamed and got == event(49)


def test_a_whole_stream_fill_still_stops_at_its_bound() -> None:
    cache = CacheLike()
    t = stage(cache).start_try({"api": "openai", "model": "gpt-4o", "cache_fill": "k"}, "provider.openai", 1)
    streamed(t, [event(i) for i in range(60)])  # ~7 KiB > the 4 KiB cache bound
    assert cache.filled == [] and not t.collect


def test_a_last_event_larger_than_the_bound_keeps_nothing() -> None:
    kept = Recorder("kept", "keep_it", tail=True, bound=200)
    t = stage(kept).start_try({"api": "openai", "model": "gpt-4o", "keep_it": True}, "provider.openai", 1)
    streamed(t, [event(1), b"event: e\ndata: " + b"y" * 300 + b"\n\n"])
    assert kept.filled == []


def test_a_first_event_one_byte_over_the_bound_is_dropped_whole_never_cut() -> None:
    """With no event separator yet there is nothing before the event to drop: the tail is not cut
    by one byte to fit the bound (it would keep a corrupted event)."""
    first = event(1)
    kept = Recorder("kept", "keep_it", tail=True, bound=len(first) - 1)
    t = stage(kept).start_try({"api": "openai", "model": "gpt-4o", "keep_it": True}, "provider.openai", 1)
    streamed(t, [first[:-2], first[-2:]])
    assert kept.filled == [] and not t.collect
