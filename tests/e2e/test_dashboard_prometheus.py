"""Issue 27: the Grafana dashboard's queries evaluated by a real Prometheus scraping a running gateway.

One stack (Envoy + authz + extproc + Valkey, fake providers, and the ledger runner `sidegate ledger
run` shipping the ledger into ClickHouse in-process (chDB) and archiving it to a `file://` directory)
and one Prometheus (Debian's binary, scraping every second: Envoy's admin, both services' metrics
ports and the runner's). Traffic that gives every
panel data runs twice, with a scrape in between: a counter series is born with its first
increment, so `rate()` only sees an increase the second time. Then every target expression of
every panel is evaluated through Prometheus' HTTP API as Grafana would send it (its variables
substituted by tests/dashboard_helpers.py), over the dashboard's own time range: each must succeed
without warnings and return finite data, and each variable filter must match real series.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import dashboard_helpers as dh
import httpx
import openai
import pytest
import yaml
from harness import Stack
from prometheus_helpers import PrometheusServer, promtool, stack_targets, targets_for

from sidegate.fakes import FakeProviderThread
from sidegate.metrics import AUTHZ_REASONS, CACHE_RESULTS, GUARD_ACTIONS, LEDGER_OUTCOMES, QUOTA_SCOPES
from sidegate.ports import free_port

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "compose" / "alerts.yml"
SCRAPE_S = 1.0
CACHED_Q = "What is the capital of France?"
STACK_EXTRA = {
    "models": {
        "cached-mini": {"routes": [{"provider": "openai", "model": "gpt-4o-mini"}], "cache": {"exact": True}},
        # The primary answers 503: Envoy retries on the next priority (a fallback and a retried error).
        "fallback": {
            "routes": [{"provider": "openai", "model": "fb-primary"}, {"provider": "anthropic", "model": "claude-3-5-haiku"}],
            "breaker": {"failures": 1000, "honour_retry_after": False},
        },
        # Its only provider answers 500: the client gets a 5xx.
        "broken": {"routes": [{"provider": "openai", "model": "broken-primary"}],
                   "breaker": {"failures": 1000, "honour_retry_after": False}},
    },
    "quota": {"prices": {"*": {"input_per_mtok": 1.0, "output_per_mtok": 4.0, "cached_input_per_mtok": 0.5}}},
    # Any request of globex's (the default output estimate alone is 4096 tokens) exceeds its tpm.
    "tenants": {"globex": {"quota": {"limits": {"tpm": 100}}}},
}  # fmt: skip


def oai(stack: Stack, key: str = "acme") -> openai.OpenAI:
    return openai.OpenAI(
        base_url=stack.base_url + "/v1", api_key=stack.keys[key].key, max_retries=0, timeout=20
    )


def ant(stack: Stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=stack.base_url, api_key=stack.keys["acme"].key, max_retries=0, timeout=20
    )


def chat(stack: Stack, model: str, text: str = "Say hello", key: str = "acme", **kw: object) -> object:
    return oai(stack, key).chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}], **kw
    )


def store_error(stack: Stack) -> None:
    """One request of a tenant with a quota while the store is frozen (SIGSTOP to the stack's own
    Valkey, by its PID): the reserve times out and admits it (fail open), a store error."""
    proc = stack.sup.child("valkey").proc
    proc.send_signal(signal.SIGSTOP)
    try:
        chat(stack, "gpt-4o-mini", "a request while the store is frozen", key="globex")
    finally:
        proc.send_signal(signal.SIGCONT)


def traffic(stack: Stack, fake_openai: FakeProviderThread) -> None:
    """One of everything the panels show."""
    fake_openai.script([
        {"model": "gpt-4o-mini", "chunks": 5, "chunk_delay_s": 0.02, "usage": {"prompt_tokens": 17, "completion_tokens": 5}},
        {"model": "gpt-4o-mini", "usage": {"prompt_tokens": 120, "completion_tokens": 7, "cached_tokens": 64}},
        {"model": "fb-primary", "status": 503, "error": "overloaded"},
        {"model": "broken-primary", "status": 500, "error": "boom"},
    ])  # fmt: skip
    # openai: a stream (TTFT, time per output token), then an answer partly from the provider's
    # prompt cache (cached tokens); the guard redacts the e-mail address (a guard action).
    chunks = list(chat(stack, "gpt-4o-mini", "mail me at jane.doe@example.com", stream=True))  # type: ignore[call-overload]
    assert chunks
    chat(stack, "gpt-4o-mini", "a long shared prefix")
    ant(stack).messages.create(
        model="claude-haiku", max_tokens=32, messages=[{"role": "user", "content": "hi"}]
    )
    assert chat(stack, "fallback").choices  # type: ignore[attr-defined]
    with pytest.raises(openai.InternalServerError):
        chat(stack, "broken")
    with pytest.raises(openai.RateLimitError):
        chat(stack, "gpt-4o-mini", key="globex")
    with pytest.raises(openai.AuthenticationError):
        chat(stack, "gpt-4o-mini", key="acme-revoked")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=stack.base_url + "/v1", api_key=stack.keys["acme"].key[:-2] + "zz", max_retries=0
                      ).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])  # fmt: skip
    # The response cache: the first asking fills it (asynchronously), a later one hits.
    hit = False
    deadline = time.monotonic() + 10
    while not hit and time.monotonic() < deadline:
        r = oai(stack).chat.completions.with_raw_response.create(
            model="cached-mini", messages=[{"role": "user", "content": CACHED_Q}]
        )
        hit = r.headers.get("x-sidegate-cache", "").startswith("hit")
        if not hit:
            time.sleep(0.1)
    assert hit, "the response cache never answered"
    store_error(stack)
    assert not fake_openai.pending_script, fake_openai.pending_script


def counters(dash: dict) -> list[str]:
    """One `sum(...)` per metric the dashboard reads, counting events (histograms by their
    `_count`): all of them must have grown before a traffic round counts as scraped."""
    names: set[str] = set()
    for t in dh.targets(dash):
        names.update(re.findall(r"\b((?:gen_ai|sidegate)_\w+?(?:_total|_bucket))\b", t.expr))
    return sorted(
        f"sum({n.removesuffix('_bucket') + '_count' if n.endswith('_bucket') else n})" for n in names
    )


def scraped_round(prom: PrometheusServer, stack: Stack, fake_openai: FakeProviderThread, dash: dict) -> None:
    exprs = counters(dash)
    before = {e: prom.value(e) or 0.0 for e in exprs}
    traffic(stack, fake_openai)
    for e in exprs:
        prom.wait_for(e, lambda v, b=before[e]: v > b, timeout_s=15)


@pytest.fixture(scope="module")
def dash() -> dict:
    return dh.load()


@pytest.fixture(scope="module")
def ports() -> dict:
    """The stack's metrics ports, chosen before it starts (see `prom`)."""
    return {"listener": {"admin_port": free_port()},
            "services": {"metrics_port": free_port(), "authz_metrics_port": free_port()},
            "observability": {"ledger_metrics_port": free_port()}}  # fmt: skip


@pytest.fixture(scope="module")
def ledger_jobs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The ledger runner's jobs, so the "Ledger & telemetry" row has data: the shipper into chDB (a
    real ClickHouse, in the runner's process) and the archive to a local directory, of records older
    than a second, every half second (the watermark moves while the traffic runs)."""
    ch = tmp_path_factory.mktemp("clickhouse") / "data"
    archive = tmp_path_factory.mktemp("archive")
    return {
        "ledger_ship": {"url": f"chdb://{ch}", "create_tables": True, "batch_size": 100,
                        "flush_interval_s": 0.05, "retry_initial_s": 0.1, "consumer": "e2e"},
        "ledger_archive": {"url": f"file://{archive}", "older_than": "1s", "interval_s": 0.5},
    }  # fmt: skip


@pytest.fixture(scope="module")
def prom(ports: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """Started before the stack: Prometheus hands its targets to the scrapers some 5 s after it
    starts (its discovery updates are throttled), which then overlaps the stack's start."""
    inline = os.environ.get("SIDEGATE_E2E_FRONT") != "ext_proc"  # harness.Stack: an authz process only then
    svc = ports["services"]
    targets = targets_for(
        ports["listener"]["admin_port"],
        svc["metrics_port"],
        0 if inline else svc["authz_metrics_port"],
        ledger_metrics_port=ports["observability"]["ledger_metrics_port"],
    )
    p = PrometheusServer(
        tmp_path_factory.mktemp("prometheus"), targets, scrape_s=SCRAPE_S, rule_files=[ALERTS]
    )
    p.start()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture(scope="module")
def stack(prom: PrometheusServer, ports: dict, ledger_jobs: dict, tmp_path_factory: pytest.TempPathFactory,
          fake_openai: FakeProviderThread, fake_anthropic: FakeProviderThread) -> Iterator[Stack]:  # fmt: skip
    extra = {**STACK_EXTRA, **ports, "observability": {**ports["observability"], **ledger_jobs}}
    s = Stack(tmp_path_factory.mktemp("stack"), fake_openai.url, fake_anthropic.url, extra=extra)
    s.start()
    try:
        assert stack_targets(s) == prom.targets, "Prometheus scrapes other ports than the stack serves"
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def hot(prom: PrometheusServer, stack: Stack, fake_openai: FakeProviderThread, dash: dict) -> float:
    """Two rounds of traffic, each seen by Prometheus; returns the moment the second was."""
    prom.wait_scraped()
    fake_openai.reset()
    for _ in range(2):
        scraped_round(prom, stack, fake_openai, dash)
    # The archiver wrote an object (records older than a second; passes every half second).
    prom.wait_for("max(sidegate_ledger_archive_watermark_seconds)", lambda v: v > 0, timeout_s=15)
    return time.time()


def _check(what: str, doc: dict) -> None:
    """A successful answer (PrometheusServer.api raised otherwise) without warnings, with series,
    and a finite value among them (a histogram_quantile over no observations is NaN: no data)."""
    warnings = doc.get("warnings") or []
    assert not warnings, f"{what}: warnings {warnings}"
    data = doc["data"]
    assert data["result"], f"{what}: no series"
    assert dh.finite_values(data["resultType"], data["result"]), (
        f"{what}: no finite value in {data['result']}"
    )


def time_range(dash: dict, end: float) -> dh.TimeRange:
    return dh.TimeRange(end - dh.parse_relative(dash["time"]["from"]), end, SCRAPE_S)


def variable_values(prom: PrometheusServer, dash: dict, tr: dh.TimeRange) -> dict[str, list[str]]:
    """Each query variable's values, asked the way Grafana's Prometheus data source does."""
    out = {}
    for v in dh.query_variables(dash):
        metric, label = v.metric_and_label()
        params = {
            "start": f"{tr.start:.0f}",
            "end": f"{tr.end:.0f}",
            **({"match[]": metric} if metric else {}),
        }
        out[v.name] = prom.api(f"label/{label}/values", **params)["data"]
    return out


def test_every_target_scrapes(prom: PrometheusServer, hot: float) -> None:
    ups = prom.query("up")["data"]["result"]
    assert {r["metric"]["job"] for r in ups} == {t.job for t in prom.targets}
    assert all(r["value"][1] == "1" for r in ups), ups
    # Envoy's own stats arrive too (in Prometheus' naming: envoy_<stat>).
    assert prom.value('sum(envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix="sidegate"})')


def test_template_variables_list_the_traffic(prom: PrometheusServer, dash: dict, hot: float) -> None:
    values = variable_values(prom, dash, time_range(dash, hot))
    assert {"acme", "globex"} <= set(values["tenant"]), values
    assert {"gpt-4o-mini", "claude-haiku", "fallback", "cached-mini"} <= set(values["model"]), values


def test_every_panel_query_has_data(prom: PrometheusServer, dash: dict, hot: float) -> None:
    """Every target as Grafana sends it: a range query over the dashboard's range (its default
    `now-6h`, ending when the traffic was scraped), and the instant query at that moment; both
    with every variable on "All"."""
    tr = time_range(dash, hot)
    all_values = {v.name: v.all_value or ".*" for v in dh.query_variables(dash)}
    targets = list(dh.targets(dash))
    assert len(targets) >= 20
    for t in targets:
        what = f"panel {t.panel_id} {t.panel_title!r} {t.ref_id}"
        expr = dh.substitute(t.expr, tr, t.max_data_points, all_values)
        _check(f"{what} instant {expr}", prom.query(expr, at=hot))
        step = tr.interval_s(t.max_data_points)
        start, end = (tr.start // step) * step, -(-tr.end // step) * step  # a step-aligned range covering it
        _check(f"{what} range {expr}", prom.query_range(expr, start, end, step))


def test_variable_filters_match_real_series(prom: PrometheusServer, dash: dict, hot: float) -> None:
    """ "All" is `.*`, which also matches a series without the label: a filter on a label the metric
    lacks would go unnoticed. So each target using a variable is evaluated with each single value
    the variable lists (the others on All): every one must succeed, and at least one has data."""
    tr = time_range(dash, hot)
    listed = variable_values(prom, dash, tr)
    all_values = {v.name: v.all_value or ".*" for v in dh.query_variables(dash)}
    for t in dh.targets(dash):
        for name, values in listed.items():
            if f"${name}" not in t.expr:
                continue
            with_data = []
            for value in values:
                expr = dh.substitute(
                    t.expr, tr, t.max_data_points, {**all_values, name: dh.escape_value(value)}
                )
                doc = prom.query(expr, at=hot)
                assert not doc.get("warnings"), (expr, doc["warnings"])
                if dh.finite_values(doc["data"]["resultType"], doc["data"]["result"]):
                    with_data.append(value)
            assert with_data, f"panel {t.panel_id} {t.panel_title!r}: no {name} value gives data: {t.expr}"


def _doc_alerts() -> list[str]:
    text = (ROOT / "docs" / "observability.md").read_text()
    blocks = re.findall(r"```promql\n(.*?)```", text, re.S)
    assert blocks, "docs/observability.md has no promql block"
    return [
        ln.strip() for b in blocks for ln in b.splitlines() if ln.strip() and not ln.lstrip().startswith("#")
    ]


def _shipped_rules() -> list[dict]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


def _left_side(expr: str) -> str:
    """An alert's expression without its final threshold (`... > 0.05` -> `...`)."""
    return re.split(r"\s(?:[<>]=?|[!=]=)\s", expr)[0]


def test_shipped_alert_rules_evaluate(prom: PrometheusServer, hot: float) -> None:
    """deploy/compose/alerts.yml, loaded by this Prometheus: every rule evaluates without error, and
    the left side of each threshold has series (it reads metrics that exist, with their labels)."""
    rules = _shipped_rules()
    assert len(rules) >= 4
    deadline = time.monotonic() + 10
    loaded: list[dict] = []
    while time.monotonic() < deadline:
        loaded = [r for g in prom.api("rules")["data"]["groups"] for r in g["rules"]]
        if len(loaded) == len(rules) and all(r["health"] != "unknown" for r in loaded):
            break
        time.sleep(0.2)
    assert [r["name"] for r in loaded] == [r["alert"] for r in rules]
    for r in loaded:
        assert r["health"] == "ok", (r["name"], r.get("lastError"))
    for r in rules:
        prom.query(r["expr"], at=hot)  # raises on a parse or evaluation error
        lhs = _left_side(r["expr"])
        _check(f"alert {r['alert']}: left side {lhs}", prom.query(lhs, at=hot))


def test_doc_alert_examples_are_the_shipped_rules(prom: PrometheusServer, hot: float) -> None:
    """docs/observability.md's PromQL examples are rules of alerts.yml (so evaluated above), and run."""
    shipped = {r["expr"] for r in _shipped_rules()}
    exprs = _doc_alerts()
    assert len(exprs) >= 4
    for expr in exprs:
        assert expr in shipped, f"docs alert not in {ALERTS.name}: {expr}"
        prom.query(expr, at=hot)


def test_promtool_checks_shipped_config(tmp_path: Path) -> None:
    """The compose stack's prometheus.yml (with the rule file it loads), the rules on their own, and
    the Kubernetes PrometheusRule's groups (the operator hands Prometheus exactly those)."""
    r = promtool("check", "config", str(ROOT / "deploy" / "compose" / "prometheus.yml"))
    assert r.returncode == 0 and "SUCCESS: 1 rule files found" in r.stdout, r.stdout + r.stderr
    k8s_rules = tmp_path / "prometheusrule-groups.yml"
    spec = yaml.safe_load((ROOT / "k8s" / "base" / "prometheusrule.yaml").read_text())["spec"]
    k8s_rules.write_text(yaml.safe_dump({"groups": spec["groups"]}))
    for rules in (ALERTS, k8s_rules):
        r = promtool("check", "rules", str(rules))
        assert r.returncode == 0 and f"SUCCESS: {len(_shipped_rules())} rules found" in r.stdout, (
            r.stdout + r.stderr
        )


def test_prometheus_is_a_real_process_on_loopback(prom: PrometheusServer) -> None:
    assert prom.proc is not None and prom.proc.poll() is None
    assert prom.url.startswith("http://127.0.0.1:")
    assert httpx.get(f"{prom.url}/api/v1/status/buildinfo", timeout=5).json()["status"] == "success"


NUMERATORS = {
    'status_class="5xx"': 'status_class="none"',
    'result=~"hit_.*"': 'result="none"',
    'type="cached"': 'type="none"',
}
"""The numerator matcher of each ratio panel, and one that matches nothing."""


def test_ratios_read_zero_when_nothing_matches_the_numerator(
    prom: PrometheusServer, dash: dict, hot: float
) -> None:
    """A ratio whose numerator has no events (no 5xx, no cache hit, no cached token) reads 0, not
    "No data": `sum()` of nothing is nothing, so each ratio falls back to its denominator * 0."""
    tr = time_range(dash, hot)
    all_values = {v.name: v.all_value or ".*" for v in dh.query_variables(dash)}
    ratios = [t for t in dh.targets(dash) if "clamp_min(" in t.expr]
    assert len(ratios) >= 3
    for t in ratios:
        found = [m for m in NUMERATORS if m in t.expr.split(" / clamp_min(")[0]]
        assert found, (
            f"panel {t.panel_id}: a ratio whose numerator matcher NUMERATORS does not know: {t.expr}"
        )
        expr = dh.substitute(
            t.expr.replace(found[0], NUMERATORS[found[0]]), tr, t.max_data_points, all_values
        )
        doc = prom.query(expr, at=hot)
        _check(f"panel {t.panel_id} without numerator events: {expr}", doc)
        assert {float(r["value"][1]) for r in doc["data"]["result"]} == {0.0}, doc["data"]["result"]


BOUNDED = {
    ("sidegate_quota_rejections_total", "scope"): QUOTA_SCOPES,
    ("sidegate_authz_denials_total", "reason"): AUTHZ_REASONS,
    ("sidegate_cache_lookups_total", "result"): CACHE_RESULTS,
    ("sidegate_guard_actions_total", "action"): GUARD_ACTIONS,
    ("sidegate_ledger_records_total", "outcome"): LEDGER_OUTCOMES,
    ("sidegate_requests_total", "status_class"): ("1xx", "2xx", "3xx", "4xx", "5xx"),
}
"""Labels the panels group by, and the values docs/observability.md documents for them."""


@pytest.mark.parametrize(("metric", "label"), list(BOUNDED))
def test_panels_group_by_documented_label_values(
    prom: PrometheusServer, hot: float, metric: str, label: str
) -> None:
    """A "by scope" panel shows scope kinds (not `tenant:acme` or `key:<key id>`), and so on."""
    seen = prom.api(f"label/{label}/values", **{"match[]": metric})["data"]
    assert seen and set(seen) <= set(BOUNDED[(metric, label)]), seen
