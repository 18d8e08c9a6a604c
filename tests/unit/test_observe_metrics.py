"""MetricsFeature: synthetic Completions -> metric updates; label bounding; the /metrics endpoint."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from sidegate import config as config_mod
from sidegate import metrics as m
from sidegate import metrics_server
from sidegate.core.completion import Completion, short_circuit, time_per_output_token, ttft_seconds
from sidegate.features.metrics import MetricsFeature
from sidegate.translate.base import Usage

SECRET_KEY = "sgk_abcd1234_very-secret-tenant-key-0000000000"
PROMPT = "Please summarise my medical record for John Smith"

CFG = config_mod.parse(
    {
        "providers": {
            "openai": {"api": "openai", "base_url": "http://127.0.0.1:1"},
            "anthropic": {"api": "anthropic", "base_url": "http://127.0.0.1:2"},
        },
        "models": {"gpt-4o-mini": {"routes": [{"provider": "openai"}, {"provider": "anthropic"}]}},
        "tenants": {"acme": {"keys": []}},
    },
    env={},
)


def value(name: str, **labels: str) -> float:
    return m.REGISTRY.get_sample_value(name, labels) or 0.0


def completion(**kw: object) -> Completion:
    base: dict[str, object] = dict(
        meta={"tenant": "acme", "model": "gpt-4o-mini", "api": "openai", "stream": True, "request_id": "r1",
              "key_id": "abcd1234"},
        provider="openai", upstream_model="gpt-4o-mini", status=200,
        usage=Usage(input_tokens=100, output_tokens=11, cached_tokens=40), final=True, streamed=True,
        attempt=1, started_at=100.0, first_byte_at=100.25, ended_at=101.25, chunks=10,
    )  # fmt: skip
    base.update(kw)
    return Completion(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def observer() -> MetricsFeature:
    return MetricsFeature(CFG, cost=lambda c: 0.002 if c.usage else 0.0)


GENAI = {
    "gen_ai_operation_name": "chat",
    "gen_ai_provider_name": "openai",
    "gen_ai_request_model": "gpt-4o-mini",
}
REQ = {"tenant": "acme", "model": "gpt-4o-mini", "provider": "openai"}


def test_timing_helpers() -> None:
    c = completion()
    assert ttft_seconds(c) == pytest.approx(0.25)
    assert time_per_output_token(c) == pytest.approx(1.0 / 10)
    assert ttft_seconds(completion(streamed=False, chunks=0)) is None
    assert time_per_output_token(completion(aborted=True)) is None
    assert time_per_output_token(completion(usage=Usage(output_tokens=1))) == pytest.approx(1.0)


def test_final_streamed_success(observer: MetricsFeature) -> None:
    before = {
        "req": value("sidegate_requests_total", **REQ, status_class="2xx"),
        "in": value("sidegate_tokens_total", **REQ, type="input"),
        "out": value("sidegate_tokens_total", **REQ, type="output"),
        "cached": value("sidegate_tokens_total", **REQ, type="cached"),
        "cost": value("sidegate_cost_usd_total", **REQ),
        "ttft_n": value("gen_ai_server_time_to_first_token_seconds_count", **GENAI),
        "ttft_s": value("gen_ai_server_time_to_first_token_seconds_sum", **GENAI),
        "tpot_s": value("gen_ai_server_time_per_output_token_seconds_sum", **GENAI),
        "dur_n": value("gen_ai_server_request_duration_seconds_count", **GENAI, status_class="2xx"),
        "usage_in": value("gen_ai_client_token_usage_sum", **GENAI, gen_ai_token_type="input"),
        "fallback": value("sidegate_fallbacks_total", model="gpt-4o-mini", provider="openai"),
    }
    observer.on_complete(completion())
    assert value("sidegate_requests_total", **REQ, status_class="2xx") == before["req"] + 1
    assert value("sidegate_tokens_total", **REQ, type="input") == before["in"] + 100
    assert value("sidegate_tokens_total", **REQ, type="output") == before["out"] + 11
    assert value("sidegate_tokens_total", **REQ, type="cached") == before["cached"] + 40
    assert value("sidegate_cost_usd_total", **REQ) == pytest.approx(before["cost"] + 0.002)
    assert value("gen_ai_server_time_to_first_token_seconds_count", **GENAI) == before["ttft_n"] + 1
    assert value("gen_ai_server_time_to_first_token_seconds_sum", **GENAI) == pytest.approx(
        before["ttft_s"] + 0.25
    )
    assert value("gen_ai_server_time_per_output_token_seconds_sum", **GENAI) == pytest.approx(
        before["tpot_s"] + 0.1
    )
    assert (
        value("gen_ai_server_request_duration_seconds_count", **GENAI, status_class="2xx")
        == before["dur_n"] + 1
    )
    assert (
        value("gen_ai_client_token_usage_sum", **GENAI, gen_ai_token_type="input") == before["usage_in"] + 100
    )
    assert value("sidegate_fallbacks_total", model="gpt-4o-mini", provider="openai") == before["fallback"]


def test_non_streamed_has_no_ttft(observer: MetricsFeature) -> None:
    g = {**GENAI, "gen_ai_provider_name": "anthropic"}
    n = value("gen_ai_server_time_to_first_token_seconds_count", **g)
    observer.on_complete(completion(provider="anthropic", streamed=False, chunks=0, first_byte_at=101.25))
    assert value("gen_ai_server_time_to_first_token_seconds_count", **g) == n
    assert value("gen_ai_server_request_duration_seconds_count", **g, status_class="2xx") >= 1


def test_retried_try_counts_only_provider_error(observer: MetricsFeature) -> None:
    req = value("sidegate_requests_total", **REQ, status_class="5xx")
    retried = value(
        "sidegate_provider_retried_errors_total", model="gpt-4o-mini", provider="openai", status="503"
    )
    observer.on_complete(completion(status=503, final=False, usage=None, streamed=False, chunks=0))
    assert (
        value("sidegate_provider_retried_errors_total", model="gpt-4o-mini", provider="openai", status="503")
        == retried + 1
    )
    assert value("sidegate_requests_total", **REQ, status_class="5xx") == req


def test_fallback_and_abort(observer: MetricsFeature) -> None:
    labels = {"model": "gpt-4o-mini", "provider": "anthropic"}
    fb, ab = value("sidegate_fallbacks_total", **labels), value("sidegate_requests_aborted_total", **labels)
    observer.on_complete(completion(provider="anthropic", attempt=2, aborted=True))
    assert value("sidegate_fallbacks_total", **labels) == fb + 1
    assert value("sidegate_requests_aborted_total", **labels) == ab + 1


def test_cache_hit_short_circuit(observer: MetricsFeature) -> None:
    labels = {**REQ, "provider": "cache", "status_class": "2xx"}
    n = value("sidegate_requests_total", **labels)
    c = short_circuit({"tenant": "acme", "model": "gpt-4o-mini"}, 200, usage=Usage(5, 7))
    assert c.final and c.attempt == 0
    observer.on_complete(c)
    assert value("sidegate_requests_total", **labels) == n + 1


def test_observer_never_raises() -> None:
    def bad_cost(_: Completion) -> float:
        raise RuntimeError("pricing down")

    obs = MetricsFeature(cost=bad_cost)
    obs.on_complete(completion())  # cost failure is logged, metrics still counted
    obs.on_complete(completion(meta=None))  # type: ignore[arg-type]  # a broken completion is swallowed


def test_labels_never_carry_keys_or_prompts(observer: MetricsFeature) -> None:
    meta = {"tenant": SECRET_KEY, "model": PROMPT, "key_id": "abcd1234", "request_id": "r9"}
    observer.on_complete(completion(meta=meta, provider=f"Bearer {SECRET_KEY}"))
    observer.on_complete(completion(meta={**meta, "tenant": "sk-proj-" + "x" * 40, "model": SECRET_KEY}, final=False))
    m.cache_lookup(PROMPT)
    m.authz_denial(SECRET_KEY)
    m.quota_rejection(SECRET_KEY, tenant=SECRET_KEY)
    m.guard_action(PROMPT, SECRET_KEY)
    m.store_error(SECRET_KEY, PROMPT)
    with m.stage_timer(PROMPT):
        pass
    text = metrics_server.render_text().decode()
    for bad in (SECRET_KEY, "abcd1234", "sk-proj-", PROMPT, "John Smith", "Bearer"):
        assert bad not in text
    assert (
        value("sidegate_requests_total", tenant="other", model="other", provider="other", status_class="2xx")
        >= 1
    )


def test_bounded_labels() -> None:
    b = m.Bounded(["known"], max_dynamic=2)
    assert [b("known"), b("a1"), b("a2"), b("a3"), b("a1")] == ["known", "a1", "a2", "other", "a1"]
    assert b("") == "other" and b(None) == "other" and b("has space") == "other"
    assert m.tenant_label("acme") == "acme"
    assert m.model_label("not-configured") == "other"
    assert m.provider_label("cache") == "cache"
    assert m.status_class(503) == "5xx" and m.status_class(0) == "other"
    assert (
        m.looks_like_secret(SECRET_KEY) and m.looks_like_secret("A" * 40) and not m.looks_like_secret("acme")
    )


def test_component_helpers() -> None:
    hit = value("sidegate_cache_lookups_total", result="hit_semantic")
    m.cache_lookup("hit_semantic")
    assert value("sidegate_cache_lookups_total", result="hit_semantic") == hit + 1
    d = value("sidegate_authz_denials_total", reason="revoked_key")
    m.authz_denial("revoked_key")
    assert value("sidegate_authz_denials_total", reason="revoked_key") == d + 1
    g = value("sidegate_guard_actions_total", entity="EMAIL_ADDRESS", action="redact")
    m.guard_action("EMAIL_ADDRESS", "redact", 2)
    assert value("sidegate_guard_actions_total", entity="EMAIL_ADDRESS", action="redact") == g + 2
    q = value("sidegate_quota_rejections_total", tenant="acme", scope="tenant")
    m.quota_rejection("tenant", tenant="acme")
    assert value("sidegate_quota_rejections_total", tenant="acme", scope="tenant") == q + 1
    s = value("sidegate_stage_duration_seconds_count", stage="cache")
    with m.stage_timer("cache"):
        pass
    assert value("sidegate_stage_duration_seconds_count", stage="cache") == s + 1
    assert metrics_server.service_metrics_port(CFG, "extproc") == 9464 and metrics_server.service_metrics_port(CFG, "authz") == 9465


def test_metrics_http_endpoint() -> None:
    srv = metrics_server.start_metrics_server(0)
    assert srv is not None and srv.port > 0
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/metrics", timeout=5) as resp:
            assert resp.status == 200
            assert resp.headers["content-type"].startswith("text/plain")
            text = resp.read().decode()
    finally:
        srv.close()
    for name in ("gen_ai_server_time_to_first_token_seconds_bucket", "sidegate_requests_total",
                 "gen_ai_client_token_usage_bucket", "process_cpu_seconds_total"):  # fmt: skip
        assert name in text


WORKER = """
import sys
from sidegate import metrics as m
from sidegate import metrics_server
m.tenant_label.set_known(["acme"])
for _ in range(int(sys.argv[1])):
    m.cache_lookup("hit_exact")
if len(sys.argv) > 2:
    sys.stdout.write(metrics_server.render_text().decode())
"""


def test_multiprocess_mode_aggregates(tmp_path: Path) -> None:
    env = {**os.environ, m.MULTIPROC_ENV: str(tmp_path)}
    for n in ("3", "4"):
        subprocess.run([sys.executable, "-c", WORKER, n], env=env, check=True, timeout=60)
    out = subprocess.run([sys.executable, "-c", WORKER, "0", "print"], env=env, check=True, timeout=60,
                         capture_output=True, text=True).stdout  # fmt: skip
    line = next(
        ln for ln in out.splitlines() if ln.startswith('sidegate_cache_lookups_total{result="hit_exact"}')
    )
    assert float(line.split()[-1]) == 7.0


def test_quota_rejection_labels_the_scope_kind_never_its_key() -> None:
    """The quota passes the refusing scope's key (`key:<key id>`...): only its kind is a label."""
    for key, kind in (("tenant:acme", "tenant"), ("key:k3y1d000", "key"), ("model:acme:gpt-4o", "model")):
        before = value("sidegate_quota_rejections_total", tenant="acme", scope=kind)
        m.quota_rejection(key, tenant="acme")
        assert value("sidegate_quota_rejections_total", tenant="acme", scope=kind) == before + 1
    scopes = {s.labels["scope"] for fam in m.REGISTRY.collect() for s in fam.samples if s.name == "sidegate_quota_rejections_total"}
    assert scopes <= {*m.QUOTA_SCOPES, m.OTHER}, scopes
