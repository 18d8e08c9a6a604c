"""The benchmark's table: medians over the interleaved rounds."""

from __future__ import annotations


def median(values: list[float]) -> float:
    values = sorted(v for v in values if v == v)  # NaN (a missing baseline) left out
    if not values:
        return float("nan")
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def report(rows: list[dict], rounds: int) -> list[str]:
    """The table of medians over the rounds. "Added vs Envoy" and the ratio to LiteLLM are taken
    within each round (the same minute of the host) and their median is printed."""

    def runs(name: str, conns: int) -> list[dict]:
        return sorted((r for r in rows if r["name"] == name and r["conns"] == conns), key=lambda r: r["round"])

    keys_ = list(dict.fromkeys((r["name"], r["conns"]) for r in rows))
    out = [f"\nmedians over {rounds} interleaved round(s)",
           "| scenario | conns | p50 ms | p99 ms | RPS | added p50 vs Envoy ms | CPU ms/req | RPS ÷ LiteLLM | ÷ LiteLLM translating |",
           "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, conns in keys_:
        mine = runs(name, conns)
        ref = {r["round"]: r for r in runs("envoy-stream" if "stream" in name else "envoy", conns)}
        added = median([r["p50"] - ref[r["round"]]["p50"] for r in mine if r["round"] in ref])
        ratios = []
        for peer_name in ("litellm", "litellm-translated"):
            peer = {r["round"]: r["rps"] for r in runs(peer_name, conns)}
            ratios.append(median([r["rps"] / peer[r["round"]] for r in mine if peer.get(r["round"])]))
        out.append(f"| {name} | {conns} | {median([r['p50'] for r in mine]):.3f} | {median([r['p99'] for r in mine]):.3f} "
                   f"| {median([r['rps'] for r in mine]):.0f} | {added:+.3f} | {median([r['cpu_ms'] for r in mine]):.3f} "
                   f"| {ratios[0]:.1f} | {ratios[1]:.1f} |")  # fmt: skip
    if rounds > 1:
        out.append("\nRPS per round:")
        for name, conns in keys_:
            out.append(f"  {name} c={conns}: " + ", ".join(f"{r['rps']:.0f}" for r in runs(name, conns)))
    return out
