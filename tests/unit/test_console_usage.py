"""The console's pure parts: the usage window, series, top lists, the lean record decoder, and which
paths are the console's public files."""

from __future__ import annotations

import re

from sidegate.admin import usage
from sidegate.admin.api_console import is_console_path
from sidegate.features.ledger.ledger import LedgerRecord

HOUR = 3600


def _rec(ts: float, tenant: str = "acme", model: str = "m", **kw: object) -> LedgerRecord:
    kw.setdefault("status", 200)
    return LedgerRecord(ts=ts, tenant=tenant, model=model, **kw)  # type: ignore[arg-type]


def test_window_is_bucket_aligned_and_capped() -> None:
    w = usage.Window.of(10 * HOUR + 5, 12 * HOUR + 1, HOUR)
    assert (w.start, w.end, w.count, w.range_capped) == (10 * HOUR, 13 * HOUR, 3, False)
    assert w.index(10 * HOUR) == 0 and w.index(13 * HOUR - 1) == 2 and w.index(13 * HOUR) is None
    capped = usage.Window.of(0, 100_000 * 60, 60)
    assert capped.range_capped and capped.count == usage.MAX_BUCKETS
    # Reversed or negative ranges give an empty window, never a negative stream id.
    assert usage.Window.of(5 * HOUR, HOUR, HOUR).start == HOUR
    empty = usage.Window.of(-10 * HOUR, -HOUR, HOUR)
    assert empty.start == 0 and empty.count == 0


def test_series_groups_and_merges_the_rest_into_other() -> None:
    w = usage.Window.of(0, 2 * HOUR, HOUR)
    s = usage.Series(w, "model")
    recs = [
        _rec(10, model=f"m{i:02d}", cost_usd=float(i), input_tokens=1) for i in range(usage.MAX_GROUPS + 3)
    ]
    recs.append(_rec(HOUR + 1, model="m00", status=500))
    recs.append(_rec(5 * HOUR, model="late"))  # outside the window: not counted
    s.add_all(recs)
    d = s.to_dict()
    names = [line["group"] for line in d["series"]]
    assert len(names) == usage.MAX_GROUPS + 1 and names[-1] == usage.OTHER and d["groups_merged"] == 3
    assert names[0] == f"m{usage.MAX_GROUPS + 2:02d}"  # the biggest spender first
    other = d["series"][-1]
    assert other["requests"] == [3, 1] and other["errors"] == [0, 1]  # m00..m02 + m00's 500
    assert "late" not in names


def test_group_names_and_top() -> None:
    r = _rec(1, team="ml", user="")
    assert usage.group_of(r, "team") == "acme/ml" and usage.group_of(r, "user") == "acme/(none)"
    assert usage.group_of(_rec(1, tenant=""), "tenant") == "(none)"
    t = usage.top(
        [_rec(1, latency_ms=10), _rec(2, latency_ms=30, status=502), _rec(3, model="x", aborted=True)],
        "model",
        1,
    )
    assert [row["group"] for row in t["rows"]] == ["m"] and t["groups"] == 2
    assert t["rows"][0]["error_rate"] == 0.5 and t["rows"][0]["latency_p95_ms"] == 30
    assert t["status_classes"] == {"2xx": 1, "3xx": 0, "4xx": 0, "5xx": 1, "aborted": 1, "other": 0}
    assert t["error_rate"] == round(2 / 3, 6)


def test_lean_record_reads_what_the_full_decoder_reads() -> None:
    full = LedgerRecord(
        ts=1700000000.25, tenant="acme", team="ml", user="al", model="gpt", provider="openai", status=429,
        aborted=True, input_tokens=12, output_tokens=3, cost_usd=0.0125, latency_ms=41.5, request_id="r",
    )  # fmt: skip
    raw = {k.encode(): v.encode() for k, v in full.to_fields().items()}
    lean, back = usage.lean_record(raw), LedgerRecord.from_fields(raw)
    for name in ("ts", "tenant", "team", "user", "model", "provider", "status", "aborted", "input_tokens",
                 "output_tokens", "cost_usd", "latency_ms"):  # fmt: skip
        assert getattr(lean, name) == getattr(back, name), name
    assert usage.lean_record({}).ts == 0.0
    assert usage.lean_record({k.decode(): v.decode() for k, v in raw.items()}).tenant == "acme"  # str answers


def test_only_the_three_console_files_are_public() -> None:
    for path in ("/console", "/console/", "/console/lib.js", "/console/app.js", "/console/app.css"):
        assert is_console_path(path), path
    for path in (
        "/console/app.py",
        "/console/../admin/v1/keys",
        "/consoles/",
        "/admin/v1/keys",
        "/console/x/app.js",
    ):
        assert not is_console_path(path), path


def test_the_console_never_turns_data_into_html_or_code() -> None:
    """Every server value goes in as text or an attribute (the CSP is the second line of defence)."""
    from importlib import resources

    root = resources.files("sidegate.admin") / "console"
    script = (root / "lib.js").read_text() + (root / "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                 "setTimeout(\"", "javascript:"):  # fmt: skip
        assert sink not in script, sink
    html = (root / "index.html").read_text()
    assert re.search(r"<script(?![^>]*\bsrc=)", html) is None  # no inline script
    assert re.search(r"\son[a-z]+\s*=", html) is None  # no inline event handler
    assert "style=" not in html and "//" not in html.replace("http://www.w3.org", "")  # nothing remote
