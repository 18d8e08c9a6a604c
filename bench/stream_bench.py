"""Streams through the gateway: time to first event (TTFE), total stream time and CPU per event.

    python bench/stream_bench.py [--streams 40] [--rounds 3] [--only envoy,front-stream,front-stream-translated]

wrk's latency is a stream's time to its LAST byte, so this has its own client (one stream at a
time, read raw: the client's own parsing weighs on no row). The provider is a small asyncio fake
(TCP_NODELAY) speaking OpenAI chat or Anthropic SSE (the fakes' own encoders), by path:

  short  the bench answer (6 content events), sent at once: the baseline of the per-event cost
  burst  LONG_EVENTS (500) content events sent in one write: Envoy reads them as one or a few
         chunks, so any per-event work before the first event leaves shows in its TTFE
  paced  PACED_EVENTS events, one every PACE_MS ms (a model generating)
  whole  the same client's question without `stream` (the fake answers the bench answer as JSON):
         its "TTFE" is the whole answer, on the same path, client and fake, in the same rounds as
         the streams: what a stream costs over a non-stream request of the same lane

A paced stream's TTFE is also an idle gateway's: the row before it idles ~PACED_EVENTS x PACE_MS
ms but for Envoy's relaying, and on this box code that ran 20 ms ago runs ~3x slower (its caches
cold), in Envoy, the front and the fake alike (docs/performance.md, "Issue 25: a stream's first
event at an idle gateway"); `--gap-ms` measures every kind so.

Paths: `envoy` (Envoy alone, same bootstrap, no Sidegate filter), `front-stream` (HTTP front +
inline auth; an OpenAI client with include_usage on an OpenAI provider: the direct lane, Envoy's
stream watch), `front-stream-translated` (the same client on an Anthropic provider: the per-try
gRPC ext_proc translating each chunk), `front-stream-translated-lean` (the same, that ext_proc on the
lean gRPC server: `services.grpc_server: lean`). Rows: TTFE p50, total p50, and CPU per stream of the
path's processes (Envoy + extproc + store, from /proc); per event = (CPU of a burst stream - CPU
of a short one) / (events between them). Every path is measured in every round, interleaved.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.measure import cpu_seconds
from bench.scenarios import sidegate_config, start_envoy_alone, start_stack
from sidegate import config as config_mod
from sidegate import keys
from sidegate.fakes import wire_anthropic, wire_openai
from sidegate.fakes.answer import Answer

LONG_EVENTS = 500
KINDS = ("short", "burst", "paced", "whole")
PACED_EVENTS = 20
PACE_MS = 5
_BASE = Answer(model="gpt-4o-mini", text="Paris is the capital of France.", tool_calls=[], finish_reason="stop",
               prompt_tokens=14, completion_tokens=7, chunks=6)  # fmt: skip


def _whole(anthropic: bool) -> bytes:
    return wire_anthropic.message(replace(_BASE, model="claude-3-5-haiku-20241022")) if anthropic else wire_openai.completion(_BASE)


def _events(kind: str, anthropic: bool) -> list[bytes]:
    n = {"short": 6, "burst": LONG_EVENTS, "paced": PACED_EVENTS}[kind]
    a = replace(_BASE, text=" ".join(f"w{i}" for i in range(n)) if n > 6 else _BASE.text, completion_tokens=n, chunks=n)
    if anthropic:
        return wire_anthropic.stream_events(replace(a, model="claude-3-5-haiku-20241022"))
    return wire_openai.stream_events(a, include_usage=True)


class PacedFake:
    """An HTTP/1.1 SSE provider on its own thread and loop (keep-alive, chunked, TCP_NODELAY)."""

    def __init__(self) -> None:
        self.events = {(k, a): _events(k, a) for k in ("short", "burst", "paced") for a in (False, True)}
        self.whole = {a: _whole(a) for a in (False, True)}
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                hdrs = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                body = b""
                if "chunked" in hdrs.get("transfer-encoding", ""):  # a body the gateway rewrote
                    while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                        body += (await reader.readexactly(size + 2))[:-2]
                    await reader.readuntil(b"\r\n")
                else:
                    body = await reader.readexactly(int(hdrs.get("content-length", "0")))
                # The kind is in the question (the gateway relays no unknown header to a provider).
                kind = next((k for k in ("burst", "paced", "whole") if b"kind " + k.encode() in body), "short")
                if kind == "whole":
                    answer = self.whole["/v1/messages" in lines[0]]
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(answer), answer))
                    await writer.drain()
                    continue
                events = self.events[(kind, "/v1/messages" in lines[0])]
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
                if kind == "paced":
                    for e in events:
                        writer.write(b"%x\r\n%s\r\n" % (len(e), e))
                        await writer.drain()
                        await asyncio.sleep(PACE_MS / 1e3)
                else:
                    body = b"".join(events)
                    writer.write(b"%x\r\n%s\r\n" % (len(body), body))
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


_ASKED = itertools.count(int(time.time()))


def _word(n: int) -> str:
    """A new question each time (letters: digits would read as PII): the translated path's exact
    cache then misses and fills, as in bench/run.py's full-pipeline scenarios."""
    s = ""
    while n:
        s, n = s + chr(97 + n % 26), n // 26
    return s


def one_stream(sock: socket.socket, port: int, model: str, kind: str, key: str | None) -> tuple[float, float]:
    """(TTFE, total) in ms of one streaming chat request on a kept-alive connection (`whole`: a
    non-stream one, both its whole answer)."""
    opts = b'"stream":true,"stream_options":{"include_usage":true},' if kind != "whole" else b""
    body = (b'{"model":"%s",%s"max_tokens":32,'
            b'"messages":[{"role":"user","content":"Stream please, kind %s, %s."}]}' % (model.encode(), opts, kind.encode(), _word(next(_ASKED)).encode()))  # fmt: skip
    auth = f"authorization: Bearer {key}\r\n" if key else ""
    req = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
           f"{auth}content-length: {len(body)}\r\n\r\n").encode() + body  # fmt: skip
    t0 = time.perf_counter()
    sock.sendall(req)
    buf, first = b"", 0.0
    while True:  # the stream ends with the chunked terminator (Envoy always re-chunks a stream)
        data = sock.recv(1 << 20)
        if not data:
            raise ConnectionError(f"closed mid-stream ({port} {model} {kind}): {buf[:300]!r} ... {buf[-300:]!r}")
        buf += data
        if kind == "whole":
            if _whole_read(buf):
                first = time.perf_counter()
                break
            continue
        if not first and b"data:" in buf:
            first = time.perf_counter()
        if buf.endswith(b"\r\n0\r\n\r\n"):
            break
    if b" 200 " not in buf[:16]:
        raise RuntimeError(buf[:300].decode(errors="replace"))
    return (first - t0) * 1e3, (time.perf_counter() - t0) * 1e3


def _whole_read(buf: bytes) -> bool:
    """Whether `buf` holds a whole non-stream answer (by its content-length, or chunked)."""
    head, sep, rest = buf.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(rest) >= int(value)
    return rest.endswith(b"\r\n0\r\n\r\n")


def measure(port: int, pids: list[int], model: str, kind: str, key: str | None, n: int, gap_s: float = 0.0) -> dict[str, float]:
    """`gap_s`: idle time before each stream: the gateway has finished the previous stream's tail
    (the rest of its answer, its cache fill) when the next one starts; 0 = back to back."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(3):
            one_stream(sock, port, model, kind, key)
        before = cpu_seconds(pids)
        runs = []
        for _ in range(n):
            if gap_s:
                time.sleep(gap_s)
            runs.append(one_stream(sock, port, model, kind, key))
        cpu = cpu_seconds(pids) - before
    return {"ttfe": statistics.median(r[0] for r in runs), "total": statistics.median(r[1] for r in runs), "cpu_ms": 1e3 * cpu / n}


PATHS = {"envoy": ("gpt-4o-mini", None), "front-stream": ("gpt-4o-mini", {"auth": "inline", "front": "http"}),
         "front-stream-translated": ("claude", {"auth": "inline", "front": "http"}),
         # the translated stream's per-try ext_proc on the lean gRPC server (extproc/h2c.py)
         "front-stream-translated-lean": ("claude", {"auth": "inline", "front": "http", "grpc_server": "lean"})}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default=",".join(PATHS))
    ap.add_argument("--keep", action="store_true", help="keep the run's directory (configs, logs); by default deleted after a run that completes")
    ap.add_argument("--gap-ms", type=float, default=0.0,
                    help="idle ms before each stream (TTFE at an idle gateway; default back to back)")  # fmt: skip
    args = ap.parse_args()
    fake = PacedFake()
    key, kid = keys.new_key()
    env = dict(os.environ, BENCH_KEY="sk-bench", SIDEGATE_LOG_LEVEL="WARNING")
    config = functools.partial(sidegate_config, fake.port, key, kid)
    work = Path(tempfile.mkdtemp(prefix="sidegate-stream-bench-"))
    stops, paths = [], []
    try:
        for name in args.only.split(","):
            model, services = PATHS[name]
            if services is None:
                cfg = config_mod.parse(config(), env=env)
                e = start_envoy_alone(work, name, cfg, env)
                stops.append(lambda e=e: (e.terminate(), e.wait(10)))
                paths.append((name, cfg.listener.port, [e.pid], model, None))
            else:
                sup = start_stack(work, name, config(**services), env)
                stops.append(sup.stop)
                paths.append((name, sup.cfg.listener.port, [c.proc.pid for c in sup.children if c.proc], model, key))
        rows: dict[tuple[str, str], list[dict[str, float]]] = {}
        for r in range(args.rounds):
            k = r % len(paths)
            for name, port, pids, model, k_ in paths[k:] + paths[:k]:
                for kind in KINDS:
                    n = args.streams if kind != "paced" else max(5, args.streams // 2)
                    rows.setdefault((name, kind), []).append(measure(port, pids, model, kind, k_, n, args.gap_ms / 1e3))
    finally:
        for stop in reversed(stops):
            stop()
    med = {key_: {f: statistics.median(x[f] for x in v) for f in ("ttfe", "total", "cpu_ms")} for key_, v in rows.items()}
    gap = f"{args.gap_ms:g} ms idle before each stream" if args.gap_ms else "back to back"
    print(f"{args.rounds} round(s), {args.streams} streams per row ({gap}); medians over rounds; CPU of the path's processes")
    print(f"{'path':<24} {'kind':<6} {'TTFE ms':>8} {'+vs envoy':>9} {'total ms':>9} {'CPU ms/stream':>13}")
    for (name, kind), m in med.items():
        base = med.get(("envoy", kind))
        plus = f"{m['ttfe'] - base['ttfe']:+.2f}" if base else ""
        print(f"{name:<24} {kind:<6} {m['ttfe']:8.2f} {plus:>9} {m['total']:9.2f} {m['cpu_ms']:13.3f}")
    for name, *_ in paths:
        per = (med[(name, "burst")]["cpu_ms"] - med[(name, "short")]["cpu_ms"]) / (LONG_EVENTS - 6) * 1e3
        extra = ""
        if name != "envoy" and ("envoy", "burst") in med:
            env_per = (med[("envoy", "burst")]["cpu_ms"] - med[("envoy", "short")]["cpu_ms"]) / (LONG_EVENTS - 6) * 1e3
            extra = f" ({per - env_per:+.1f} µs over Envoy alone)"
        print(f"{name}: CPU per event {per:.1f} µs{extra}")
    if args.keep:  # a run that failed keeps its directory anyway: its logs say why
        print(f"run directory kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
