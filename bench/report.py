"""The benchmark's table: medians over the interleaved rounds."""

from __future__ import annotations

from collections.abc import Callable

PEERS = (("litellm", "x LiteLLM"), ("litellm-translated", "x LiteLLM translating"),
         ("portkey", "x Portkey"), ("portkey-translated", "x Portkey translating"))  # fmt: skip
"""The peers a row's RPS is divided by, within each round: (scenario, column title)."""
KINDS = ("envoy", "extproc", "authz", "xds", "store", "litellm", "portkey", "fake")
"""The process kinds of the CPU split, in column order (any other kind, e.g. admin, follows)."""


def median(values: list[float]) -> float:
    values = sorted(v for v in values if v == v)  # NaN (a missing baseline) left out
    if not values:
        return float("nan")
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def report(rows: list[dict], rounds: int) -> list[str]:
    """The table of medians over the rounds. "Added vs Envoy" and the ratios to the peers (RPS ÷
    the peer's RPS) are taken within each round (the same minute of the host) and their median is
    printed; then the CPU per request per process kind."""

    def runs(name: str, conns: int) -> list[dict]:
        return sorted((r for r in rows if r["name"] == name and r["conns"] == conns), key=lambda r: r["round"])

    keys_ = list(dict.fromkeys((r["name"], r["conns"]) for r in rows))
    peers = [(p, title) for p, title in PEERS if any(r["name"] == p for r in rows)]
    out = [f"\nmedians over {rounds} interleaved round(s)",
           "| scenario | conns | p50 ms | p99 ms | RPS | added p50 vs Envoy ms | CPU ms/req |"
           + "".join(f" {title} |" for _, title in peers),
           "|---|---|---|---|---|---|---|" + "---|" * len(peers)]  # fmt: skip
    for name, conns in keys_:
        mine = runs(name, conns)
        ref = {r["round"]: r for r in runs("envoy-stream" if "stream" in name else "envoy", conns)}
        added = median([r["p50"] - ref[r["round"]]["p50"] for r in mine if r["round"] in ref])
        ratios = []
        for peer_name, _ in peers:
            peer = {r["round"]: r["rps"] for r in runs(peer_name, conns)}
            ratios.append(median([r["rps"] / peer[r["round"]] for r in mine if peer.get(r["round"])]))
        out.append(f"| {name} | {conns} | {median([r['p50'] for r in mine]):.3f} | {median([r['p99'] for r in mine]):.3f} "
                   f"| {median([r['rps'] for r in mine]):.0f} | {added:+.3f} | {median([r['cpu_ms'] for r in mine]):.3f} |"
                   + "".join(f" {x:.2f} |" for x in ratios))  # fmt: skip
    out += cpu_table(rows, keys_, runs)
    if rounds > 1:
        out.append("\nRPS per round:")
        for name, conns in keys_:
            out.append(f"  {name} c={conns}: " + ", ".join(f"{r['rps']:.0f}" for r in runs(name, conns)))
    return out


def cpu_table(
    rows: list[dict], keys_: list[tuple[str, int]], runs: Callable[[str, int], list[dict]]
) -> list[str]:
    """CPU ms per request per process kind (medians over the rounds; `-`: the scenario has no such
    process). "total" is the CPU ms/req column above (every process of the scenario, the fake
    upstream included); "path" is the sum of the kinds but the fake: what the path under test costs
(read in the same /proc scan as the kinds, so it may differ from total - fake by a few ticks)."""
    kinds = [k for k in KINDS if any(k in r.get("cpu_by_kind", {}) for r in rows)]
    kinds += sorted({k for r in rows for k in r.get("cpu_by_kind", {})} - set(kinds))
    if not kinds:
        return []
    out = ["\nCPU ms per request per process (medians over the rounds)",
           "| scenario | conns | total | path |" + "".join(f" {k} |" for k in kinds),
           "|---|---|---|---|" + "---|" * len(kinds)]  # fmt: skip
    for name, conns in keys_:
        mine = runs(name, conns)
        path = median([sum(v for k, v in r.get("cpu_by_kind", {}).items() if k != "fake") for r in mine])
        cells = []
        for k in kinds:
            vals = [r["cpu_by_kind"][k] for r in mine if k in r.get("cpu_by_kind", {})]
            cells.append(f"{median(vals):.3f}" if vals else "-")
        out.append(f"| {name} | {conns} | {median([r['cpu_ms'] for r in mine]):.3f} | {path:.3f} |"
                   + "".join(f" {c} |" for c in cells))  # fmt: skip
    return out
