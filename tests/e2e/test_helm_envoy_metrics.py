"""The Helm chart's `envoy-metrics` container, run for real beside a real stack: a second Envoy with
the ConfigMap's envoy-metrics.yaml exposes only GET /stats/prometheus of the gateway Envoy's
loopback admin, and that output holds the series the chart's KEDA query scales on."""

from __future__ import annotations

import importlib.util
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import yaml
from harness import Stack

from sidegate.ports import free_port
from sidegate.supervisor import envoy_binary

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def _render_all():
    spec = importlib.util.spec_from_file_location("deploy_render_all_e2e", ROOT / "deploy" / "render_all.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def metrics(stack: Stack, tmp_path_factory) -> Iterator[tuple[str, str]]:
    """(the envoy-metrics URL, the chart's KEDA query)."""
    assert stack.sup is not None
    port = free_port()
    values = {
        "config": {"listener": {"admin_port": stack.sup.cfg.listener.admin_port}},
        "envoyMetrics": {"port": port},
        "autoscaling": {"hpa": {"enabled": False}, "keda": {"enabled": True}},
    }
    rendered = _render_all().helm_template(values)
    cm = yaml.safe_load(rendered["sidegate/templates/configmap.yaml"])
    keda = yaml.safe_load(rendered["sidegate/templates/keda.yaml"])
    query = keda["spec"]["triggers"][0]["metadata"]["query"]
    path = tmp_path_factory.mktemp("envoy-metrics") / "envoy-metrics.yaml"
    path.write_text(cm["data"]["envoy-metrics.yaml"])
    # The container's command line, as the chart renders it.
    proc = subprocess.Popen(
        [envoy_binary(), "-c", str(path), "--disable-hot-restart", "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                httpx.get(url + "/", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
                assert time.monotonic() < deadline, "the envoy-metrics Envoy did not start"
                time.sleep(0.1)
        yield url, query
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_prometheus_stats_hold_the_series_keda_scales_on(stack: Stack, metrics: tuple[str, str]) -> None:
    metrics_url, query = metrics
    client = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=stack.keys["acme"].key, max_retries=0)
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    r = httpx.get(metrics_url + "/stats/prometheus", timeout=5)
    assert r.status_code == 200
    series = [line for line in r.text.splitlines() if line.startswith("envoy_http_downstream_rq_active{")]
    label = query[query.index("envoy_http_conn_manager_prefix=") :].split(",")[0]
    assert any(label in line for line in series), (label, series)
    assert "envoy_http_downstream_rq_total" in r.text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/stats/prometheus"),
        ("GET", "/config_dump"),
        ("GET", "/clusters"),
        ("POST", "/drain_listeners"),
        ("POST", "/quitquitquit"),
        ("GET", "/stats"),
    ],
)
def test_nothing_else_of_envoys_admin_is_reachable(
    stack: Stack, metrics: tuple[str, str], method: str, path: str
) -> None:
    metrics_url, _ = metrics
    assert httpx.request(method, metrics_url + path, timeout=5).status_code == 404
    client = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=stack.keys["acme"].key, max_retries=0)
    assert client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    ).choices
