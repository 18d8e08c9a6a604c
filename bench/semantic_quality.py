"""Semantic-cache quality and cost on the paraphrase set: precision and recall at a threshold, and
what one lookup costs (embedding + contrast check + vector search), with the real model.

    PYTHONPATH=$PWD .venv/bin/python bench/semantic_quality.py [--threshold 0.95] [--n 200] \
        [--model all-minilm-l6-v2] [--fp32]

The set (tests/fixtures/semantic/paraphrases.jsonl) holds pairs (a, b): `hit` true when an answer to
a serves b (paraphrases), false for near-misses (same topic, another number, entity, negation,
opposite or direction). Each pair is scored as the cache would: b is looked up in an index holding
a's vector and signature; a pair counts as a predicted hit when the vector scores >= the threshold
and the contrast check accepts it. Precision = true hits / predicted hits; recall = true hits found
/ all true hits. Latency: the index's blocking lookup job (model run + search), per distinct text
(no recent-embeddings reuse) and per repeated text (from the LRU); CPU time beside wall time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "semantic" / "paraphrases.jsonl"


def load_pairs(path: Path = FIXTURE) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def score_pairs(pairs: list[dict[str, Any]], embed: Any) -> list[tuple[float, bool]]:
    """(cosine, contrast-compatible) per pair; `embed` maps a list of texts to unit vectors."""
    from sidegate.features.cache.contrast import compatible, signature

    va = embed([p["a"] for p in pairs])
    vb = embed([p["b"] for p in pairs])
    out = []
    for p, a, b in zip(pairs, va, vb, strict=True):
        cos = float(sum(x * y for x, y in zip(a, b, strict=True)))
        out.append((cos, compatible(signature(p["a"]), signature(p["b"]))))
    return out


def quality(
    pairs: list[dict[str, Any]], scores: list[tuple[float, bool]], threshold: float
) -> dict[str, Any]:
    tp = fp = fn = 0
    false_hits = []
    for p, (cos, ok) in zip(pairs, scores, strict=True):
        predicted = cos >= threshold and ok
        if predicted and p["hit"]:
            tp += 1
        elif predicted:
            fp += 1
            false_hits.append((round(cos, 3), p["a"], p["b"]))
        elif p["hit"]:
            fn += 1
    return {
        "threshold": threshold,
        "pairs": len(pairs),
        "paraphrases": tp + fn,
        "precision": tp / (tp + fp) if tp + fp else 1.0,
        "recall": tp / (tp + fn) if tp + fn else 1.0,
        "false_hits": false_hits,
    }


def _pct(xs: list[float]) -> str:
    s = sorted(xs)
    return f"p50 {statistics.median(s):6.2f} ms  p99 {s[min(len(s) - 1, int(len(s) * 0.99))]:6.2f} ms"


def latency(pairs: list[dict[str, Any]], n: int, model: str, int8: bool) -> None:
    """The lookup job the index runs in its worker thread, timed on distinct and on repeated texts."""
    from sidegate.config.cache import SemanticSettings
    from sidegate.features.cache.index import SemanticIndex

    index = SemanticIndex(SemanticSettings(vector_store="memory", model=model, int8_compute=int8))
    index._start_sync()
    for i, p in enumerate(pairs):
        if p["hit"]:
            index._add_job("bench", f"{i:032x}", p["a"], None, time.time() + 3600, 256)
    texts = [p["b"] for p in pairs][:n]
    for label, reps in (("distinct texts", 1), ("repeated text (recent LRU)", 0)):
        wall: list[float] = []
        cpu: list[float] = []
        for i, text in enumerate(texts if reps else [texts[0]] * len(texts)):
            if reps:
                index._recent.clear()  # every lookup runs the model
            t, c = time.perf_counter(), time.thread_time()
            index._search_job("bench", text, None, 0.95, 256)
            wall.append((time.perf_counter() - t) * 1000)
            cpu.append((time.thread_time() - c) * 1000)
            if i == 0 and not reps:
                wall.clear()
                cpu.clear()
        print(f"lookup, {label:28s} wall {_pct(wall)}   cpu {_pct(cpu)}   (n={len(wall)})")
    index.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threshold", type=float, nargs="*", default=[0.9, 0.92, 0.94, 0.95, 0.96])
    ap.add_argument("--n", type=int, default=200, help="lookups timed per case")
    ap.add_argument("--model", default="paraphrase-minilm-l3-v2", help="semantic.model")
    ap.add_argument("--fp32", action="store_true", help="the fp32 graph (int8_compute: false)")
    args = ap.parse_args()
    from sidegate.features.cache.embedder import Embedder

    pairs = load_pairs()
    embedder = Embedder(model=args.model, int8_compute=not args.fp32)
    scores = score_pairs(pairs, embedder.embed)
    raw = [(cos, True) for cos, _ in scores]
    print(f"{args.model} ({embedder.model_file.name if embedder.model_file else '?'}): "
          f"paraphrase set: {len(pairs)} pairs, {sum(p['hit'] for p in pairs)} paraphrases")
    print("threshold  precision  recall   (vector only: precision  recall)")
    for th in args.threshold:
        q, r = quality(pairs, scores, th), quality(pairs, raw, th)
        print(
            f"  {th:.2f}      {q['precision']:.3f}    {q['recall']:.3f}          {r['precision']:.3f}   {r['recall']:.3f}"
        )
        for cos, a, b in q["false_hits"]:
            print(f"      false hit {cos}: {a!r} ~ {b!r}")
    latency(pairs, args.n, args.model, not args.fp32)


if __name__ == "__main__":
    main()
