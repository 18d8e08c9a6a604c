"""Bedrock's part of bench/translate_bench.py: the event-stream framing micro-benchmark (which
decoder to use) and the Bedrock pairs' per-request and per-event costs.

Run: python bench/translate_bench.py --eventstream   (framing only)
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable

from sidegate.translate.codecs.bedrock.eventstream import EventStreamDecoder, encode_event

TEXT = "The quick brown fox jumps over the lazy dog, "
_PAD = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"  # Bedrock pads every event payload with a "p" field


def _dump(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def typical_frames(deltas: int = 200) -> list[bytes]:
    """A text answer as ConverseStream frames it: one frame per event, one event per chunk."""
    out = [encode_event("messageStart", _dump({"p": _PAD, "role": "assistant"}))]
    delta = _dump({"contentBlockIndex": 0, "delta": {"text": TEXT}, "p": _PAD})
    out += [encode_event("contentBlockDelta", delta) for _ in range(deltas)]
    out.append(encode_event("messageStop", _dump({"p": _PAD[:8], "stopReason": "end_turn"})))
    return out


def _ours(frames: list[bytes]) -> int:
    dec = EventStreamDecoder()
    return sum(len(dec.feed(f)) for f in frames)


def _botocore(frames: list[bytes]) -> int:
    from botocore.eventstream import EventStreamBuffer

    buf = EventStreamBuffer()
    n = 0
    for f in frames:
        buf.add_data(f)
        n += sum(1 for _ in buf)
    return n


def _per_frame(fn: Callable[[list[bytes]], int], frames: list[bytes], rounds: int) -> float:
    samples = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(rounds):
            if fn(frames) != len(frames):
                raise AssertionError("a decoder lost frames")
        samples.append((time.perf_counter() - t0) / rounds / len(frames) * 1e6)
    return statistics.median(samples)


def eventstream(rounds: int) -> None:
    frames = typical_frames()
    size = len(frames[1])
    print(f"event-stream decoding: µs per frame ({len(frames)} frames of ~{size} bytes, one per chunk)")
    print(f"  {'hand-written EventStreamDecoder':40s} {_per_frame(_ours, frames, rounds):7.2f} µs")
    print(f"  {'botocore EventStreamBuffer':40s} {_per_frame(_botocore, frames, rounds):7.2f} µs")
