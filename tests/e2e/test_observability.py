"""Issue 8: metrics, ledger and logs after real requests through Envoy; no secret or prompt leaks."""

from __future__ import annotations

import time

import httpx
import openai
import pytest
from harness import ANTHROPIC_PROVIDER_KEY, OPENAI_PROVIDER_KEY

pytestmark = pytest.mark.e2e
PROMPT = "Secret plan: the launch code is PINEAPPLE-7731, repeat it"


def test_streamed_request_metrics_and_ledger(stack, fake_openai):
    fake_openai.script([{"chunks": 5, "chunk_delay_s": 0.05, "usage": {"prompt_tokens": 17, "completion_tokens": 5}}])
    client = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=stack.keys["acme"].key, max_retries=0)
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}], stream=True))
    assert chunks
    port = stack.sup.cfg.services.metrics_port
    text = ""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        if 'gen_ai_server_time_to_first_token_seconds_count{' in text:
            break
        time.sleep(0.1)
    ttft = [ln for ln in text.splitlines() if ln.startswith("gen_ai_server_time_to_first_token_seconds_count")]
    assert ttft and 'gen_ai_request_model="gpt-4o-mini"' in ttft[0] and float(ttft[0].split()[-1]) >= 1
    tokens = [ln for ln in text.splitlines() if ln.startswith("sidegate_tokens_total{") and 'tenant="acme"' in ln]
    assert any('type="output"' in ln and ln.endswith(" 5.0") for ln in tokens), tokens
    assert any('type="input"' in ln and ln.endswith(" 17.0") for ln in tokens), tokens
    # The ledger has the record with the provider's exact usage.
    deadline = time.monotonic() + 5
    recs: list = []
    while time.monotonic() < deadline:
        recs = [r for r in stack.ledger() if r.tenant == "acme" and r.stream]
        if recs:
            break
        time.sleep(0.1)
    assert recs, "no ledger record"
    rec = recs[-1]
    assert (rec.input_tokens, rec.output_tokens) == (17, 5)
    assert rec.model == "gpt-4o-mini" and rec.provider == "openai" and rec.status == 200


def test_no_key_or_prompt_in_metrics_or_logs(stack, fake_openai):
    client = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=stack.keys["acme"].key, max_retries=0)
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}])
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=stack.base_url + "/v1", api_key=stack.keys["acme"].key[:-2] + "zz",
                      max_retries=0).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}])  # fmt: skip
    time.sleep(0.5)
    cfg = stack.sup.cfg.services
    scraped = httpx.get(f"http://127.0.0.1:{cfg.metrics_port}/metrics").text
    if cfg.auth == "ext_authz":  # the separate authz process counts its own denials
        scraped += httpx.get(f"http://127.0.0.1:{cfg.authz_metrics_port}/metrics").text
    assert "sidegate_authz_denials_total" in scraped
    # the access log has the request (Envoy flushes its log file on an interval: wait for it, bounded)
    deadline = time.monotonic() + 10
    while '"tenant":"acme"' not in (logs := stack.logs()).replace(" ", "") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert '"tenant":"acme"' in logs.replace(" ", "")
    secrets = [k.key for k in stack.keys.values()] + [OPENAI_PROVIDER_KEY, ANTHROPIC_PROVIDER_KEY]
    for blob, where in ((scraped, "metrics"), (logs, "logs")):
        assert "PINEAPPLE" not in blob, where
        for s in secrets:
            assert s not in blob and s.split("_", 2)[-1] not in blob, where
