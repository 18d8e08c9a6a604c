"""What translating costs over passthrough, per client API, as built (docs/translation.md, "Design").

Run: PYTHONPATH=$PWD python -m bench.translate_design [--rounds 21] [--target-ms 20]

For each client API, the cross-API route (the canonical translator: client codec + provider codec)
against the same-API route (passthrough), both from ``get_translator``, on the same client request
and on a provider answer / stream of the same size. Time is this thread's CPU time
(``time.thread_time``), not wall time, so the minutes the scheduler gives to other processes on a
shared machine are not counted; cache and memory-bus contention still are. For each case, every
round times both routes back to back (alternating which goes first) and keeps their ratio: a burst
of load from another process hits both sides of a ratio nearly equally.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench import translate_inputs as inputs
from sidegate.errors import Api
from sidegate.translate import get_translator
from sidegate.translate.base import TranslateOptions

OA, AN = Api.OPENAI, Api.ANTHROPIC
OPTS = TranslateOptions()
OTHER = {OA: AN, AN: OA}


def _requests(api: Api, large: bool) -> dict[str, Any]:
    turns = 50 if large else 1
    return inputs.openai_request(turns) if api is OA else inputs.anthropic_request(turns)


def _response(api: Api, large: bool) -> bytes:
    return inputs.openai_response(large) if api is OA else inputs.anthropic_response(large)


def _stream(api: Api, tools: bool) -> list[bytes]:
    return inputs.openai_stream(tools) if api is OA else inputs.anthropic_stream(tools)


def _per_request(tr: Any, body: dict[str, Any], resp: bytes) -> Callable[[], None]:
    def op() -> None:
        tr.request(body, model="m", opts=OPTS)
        tr.response(resp)

    return op


def _per_stream(tr: Any, chunks: list[bytes]) -> Callable[[], None]:
    def op() -> None:
        st = tr.stream(client_wants_usage=True)
        for c in chunks:
            st.feed(c)
        st.finish()

    return op


def cases() -> list[tuple[str, Callable[[], None], Callable[[], None], int, int]]:
    """(name, passthrough op, translated op, and per side the units per op: 1 request, or the
    number of events of that side's provider stream)."""
    out = []
    for client in (OA, AN):
        provider = OTHER[client]
        same, cross = get_translator(client, client), get_translator(client, provider)
        pair = f"{client.value} client"
        for large in (False, True):
            body = _requests(client, large)
            name = f"{pair}, request+response {'50 turns, tools' if large else '1 turn'}"
            out.append(
                (
                    name,
                    _per_request(same, body, _response(client, large)),
                    _per_request(cross, body, _response(provider, large)),
                    1,
                    1,
                )
            )
        for tools in (False, True):
            name = f"{pair}, stream, per event ({'thinking+text+tools' if tools else 'text'})"
            same_chunks, cross_chunks = _stream(client, tools), _stream(provider, tools)
            op_same, op_cross = _per_stream(same, same_chunks), _per_stream(cross, cross_chunks)
            out.append((name, op_same, op_cross, len(same_chunks), len(cross_chunks)))
    return out


def _loops(op: Callable[[], None], target_s: float) -> int:
    n, t = 1, 0.0
    while n < 1_000_000:
        t = _time(op, n)
        if t >= target_s / 4:
            break
        n *= 2
    return max(1, int(n * target_s / max(t, 1e-9)))


def _time(op: Callable[[], None], loops: int) -> float:
    t0 = time.thread_time()
    for _ in range(loops):
        op()
    return time.thread_time() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--target-ms", type=float, default=20.0, help="time per side per case per round")
    args = ap.parse_args()
    rounds, target = max(3, min(args.rounds, 101)), max(1.0, min(args.target_ms, 200.0)) / 1e3
    table = cases()
    loops = [(_loops(p, target), _loops(c, target)) for _, p, c, _, _ in table]
    samples: list[list[tuple[float, float]]] = [[] for _ in table]
    for r in range(rounds):
        for i, (_, same, cross, u_same, u_cross) in enumerate(table):
            ls, lc = loops[i]
            if r % 2:
                c = _time(cross, lc) / lc
                p = _time(same, ls) / ls
            else:
                p = _time(same, ls) / ls
                c = _time(cross, lc) / lc
            samples[i].append((p / u_same * 1e6, c / u_cross * 1e6))
    print(f"{rounds} interleaved rounds, ~{target * 1e3:.0f} ms CPU per side per case per round; medians")
    print(f"{'case':58s} {'passthrough µs':>14s} {'translated µs':>13s} {'ratio':>6s} {'ratio p25-p75':>14s}")
    for (name, *_), s in zip(table, samples, strict=True):
        ratios = sorted(c / p for p, c in s)
        q = statistics.quantiles(ratios, n=4)
        p_med, c_med = statistics.median(x for x, _ in s), statistics.median(y for _, y in s)
        print(
            f"{name:58s} {p_med:14.2f} {c_med:13.2f} {statistics.median(ratios):6.2f} {q[0]:6.2f}-{q[2]:<6.2f}"
        )


if __name__ == "__main__":
    main()
