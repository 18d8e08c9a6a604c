"""Pairwise translators (sidegate.translate) against a canonical form (sidegate/translate/codecs/), measured.

Run: PYTHONPATH=$PWD python -m bench.translate_design [--rounds 21] [--target-ms 20]
(the numbers and the decision they led to: docs/translation.md, "Design").

First it checks that both designs produce the same provider bodies, client bodies, stream events,
usage and errors for every bench input (parsed JSON compared; OpenAI's ``created`` ignored), so the
timing compares equal work. Time is this thread's CPU time (``time.thread_time``), not wall time,
so the minutes the scheduler gives to other processes on a shared machine are not counted; cache
and memory-bus contention still are. For each case, every round times the pairwise translator and the
canonical one back to back (alternating which goes first) and keeps their ratio: a burst of load
from another process on the shared machine hits both sides of a ratio nearly equally.
Same-API routes are also run through the canonical form (decode + encode), against today's
passthrough; those outputs are semantically close but not equal, and the differences are printed.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import orjson

from bench import translate_inputs as inputs
from sidegate.errors import Api, GatewayError
from sidegate.sse import SseParser
from sidegate.translate import get_translator
from sidegate.translate.base import TranslateOptions
from sidegate.translate.codecs.translator import CanonicalTranslator

OA, AN = Api.OPENAI, Api.ANTHROPIC
OPTS = TranslateOptions()


def _requests(api: Api, large: bool) -> dict[str, Any]:
    turns = 50 if large else 1
    return inputs.openai_request(turns) if api is OA else inputs.anthropic_request(turns)


def _response(api: Api, large: bool) -> bytes:
    return inputs.openai_response(large) if api is OA else inputs.anthropic_response(large)


def _stream(api: Api, tools: bool) -> list[bytes]:
    return inputs.openai_stream(tools) if api is OA else inputs.anthropic_stream(tools)


# ------------------------------------------------------------------------------------ equality


def _strip_created(obj: Any) -> Any:
    if isinstance(obj, dict):
        obj.pop("created", None)
    return obj


def _events(raw: bytes) -> list[tuple[str | None, Any]]:
    out = []
    for ev in SseParser().feed(raw):
        data = ev.data if ev.data == b"[DONE]" else _strip_created(orjson.loads(ev.data))
        out.append((ev.event, data))
    return out


def _run_stream(tr: Any, chunks: list[bytes], wants: bool, split: int = 0) -> tuple[list[Any], Any, bool]:
    st = tr.stream(client_wants_usage=wants)
    data = b"".join(chunks)
    pieces = [data[i : i + split] for i in range(0, len(data), split)] if split else chunks
    out = b"".join(st.feed(c) for c in pieces) + st.finish()
    return _events(out), st.usage, st.done


def _refusal(tr: Any, body: dict[str, Any]) -> Any:
    """The provider body, or the refusal (status, parameter, message) a client would get."""
    try:
        return orjson.loads(tr.request(body, model="m", opts=OPTS).body)
    except GatewayError as err:
        return (err.status, err.param, err.message)


_BAD_OPENAI = [
    {"n": 2},
    {"response_format": {"type": "json_object"}},
    {"temperature": 1.5},
    {"logit_bias": {"1": 2}},
    {"reasoning_effort": "high", "max_completion_tokens": 100},
    {"frobnicate": True},
]
_BAD_ANTHROPIC = [{"container": "x"}, {"service_tier": "priority"}, {"thinking": {"type": "weird"}}]


def check_equal() -> list[str]:
    """Assert the designs agree on every translating pair; return diffs found on same-API routes."""
    notes: list[str] = []
    for client, provider in ((OA, AN), (AN, OA), (OA, OA), (AN, AN)):
        pw, cn = get_translator(client, provider), CanonicalTranslator(client, provider)
        same = client is provider

        def check(what: str, a: Any, b: Any, same: bool = same, pair: str = f"{client}->{provider}") -> None:
            if a == b:
                return
            if not same:
                raise AssertionError(f"{pair} {what}: pairwise {a!r}\n!= canonical {b!r}")
            diff = (
                sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                if isinstance(a, dict)
                else "events"
            )
            notes.append(f"{pair} {what}: differs in {diff}")

        for large in (False, True):
            size = "large" if large else "small"
            body = _requests(client, large)
            a, b = pw.request(body, model="m", opts=OPTS), cn.request(body, model="m", opts=OPTS)
            assert (a.path, a.headers) == (b.path, b.headers)
            check(f"request {size}", orjson.loads(a.body), orjson.loads(b.body))
            resp = _response(provider, large)
            (ab, au), (bb, bu) = pw.response(resp), cn.response(resp)
            check(f"response {size}", _strip_created(orjson.loads(ab)), _strip_created(orjson.loads(bb)))
            assert au == bu, (client, provider, au, bu)
        for tools in (False, True):
            for wants in (True, False):
                for split in (0, 7):
                    a_ev, a_u, a_d = _run_stream(pw, _stream(provider, tools), wants, split)
                    b_ev, b_u, b_d = _run_stream(cn, _stream(provider, tools), wants, split)
                    assert (a_u, a_d) == (b_u, b_d), (client, provider, a_u, b_u)
                    if not split and wants:
                        check(f"stream tools={tools}", {"events": a_ev}, {"events": b_ev})
                    elif not same:
                        check(f"stream tools={tools} usage={wants} split={split}", a_ev, b_ev)
            cut = _stream(provider, tools)[:-2]  # a stream that dies before its terminal event
            check(f"cut stream tools={tools}", _run_stream(pw, cut, True)[0], _run_stream(cn, cut, True)[0])
        if not same:
            for status, err in inputs.ERRORS:
                check(f"error {status}", pw.error(status, err), cn.error(status, err))
            base = _requests(client, False)
            for bad in _BAD_OPENAI if client is OA else _BAD_ANTHROPIC:
                body = {**base, **bad}
                check(f"refusal {bad}", _refusal(pw, body), _refusal(cn, body))
    return notes


# -------------------------------------------------------------------------------------- timing


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


def cases() -> list[tuple[str, Callable[[], None], Callable[[], None], int]]:
    """(name, pairwise op, canonical op, units per op: 1 request or the number of stream events)."""
    out = []
    for client, provider in ((OA, AN), (AN, OA), (OA, OA), (AN, AN)):
        pw, cn = get_translator(client, provider), CanonicalTranslator(client, provider)
        pair = f"{client.value}->{provider.value}"
        for large in (False, True):
            body, resp = _requests(client, large), _response(provider, large)
            name = f"{pair} request+response {'50 turns, tools' if large else '1 turn'}"
            out.append((name, _per_request(pw, body, resp), _per_request(cn, body, resp), 1))
        for tools in (False, True):
            chunks = _stream(provider, tools)
            name = f"{pair} stream, per event ({'thinking+text+tools' if tools else 'text'})"
            out.append((name, _per_stream(pw, chunks), _per_stream(cn, chunks), len(chunks)))
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
    notes = check_equal()
    print("equality: both designs give the same provider bodies, client bodies, stream events, usage")
    print("          and errors on every translating pair (parsed JSON, `created` ignored)")
    for note in notes:
        print(f"  same-API canonical round trip vs passthrough: {note}")
    table = cases()
    loops = [(_loops(p, target), _loops(c, target)) for _, p, c, _ in table]
    samples: list[list[tuple[float, float]]] = [[] for _ in table]
    for r in range(rounds):
        for i, (_, pw, cn, units) in enumerate(table):
            lp, lc = loops[i]
            if r % 2:
                c = _time(cn, lc) / lc
                p = _time(pw, lp) / lp
            else:
                p = _time(pw, lp) / lp
                c = _time(cn, lc) / lc
            samples[i].append((p / units * 1e6, c / units * 1e6))
    print(f"\n{rounds} interleaved rounds, ~{target * 1e3:.0f} ms CPU per side per case per round; medians")
    print(f"{'case':62s} {'pairwise µs':>11s} {'canonical µs':>12s} {'ratio':>6s} {'ratio p25-p75':>14s}")
    for (name, *_), s in zip(table, samples, strict=True):
        ratios = sorted(c / p for p, c in s)
        q = statistics.quantiles(ratios, n=4)
        p_med, c_med = statistics.median(x for x, _ in s), statistics.median(y for _, y in s)
        print(
            f"{name:62s} {p_med:11.2f} {c_med:12.2f} {statistics.median(ratios):6.2f} {q[0]:6.2f}-{q[2]:<6.2f}"
        )


if __name__ == "__main__":
    main()
