"""A ConfigMap change applies live, without a pod roll: the stack's config file lives in a directory
laid out like a ConfigMap volume (tests/k8s_volume.py), the test swaps it the way the kubelet does
(a new version directory, `..data` renamed over), and the change is served within ~2 s with no
process restarted (Envoy not hot-restarted either).

PENDING: this needs the xDS server and the per-second file seeding (issue 26, contracts 4 and 1),
which are not on the `h/helm` branch. At merge, rename this file to `test_configmap_live.py` so
pytest collects it (nothing in it is skipped).
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import yaml
from harness import ADMIN_TOKEN, ANTHROPIC_PROVIDER_KEY, OPENAI_PROVIDER_KEY, Stack
from k8s_volume import write_configmap_dir

from sidegate import config as config_mod
from sidegate.supervisor import Supervisor

pytestmark = pytest.mark.e2e
APPLY_WITHIN_S = 2.0
"""The replica re-reads its file every second; seeding, the store's change notice and the xDS push
take the rest."""


@pytest.fixture(scope="module")
def cm_stack(tmp_path_factory, fake_openai, fake_anthropic) -> Iterator[Stack]:
    """Stack.start, with the config in a ConfigMap-style volume instead of a plain file."""
    s = Stack(tmp_path_factory.mktemp("stack"), fake_openai.url, fake_anthropic.url)
    s.workdir.mkdir(parents=True, exist_ok=True)
    s.cfg_data = s.config()
    volume = s.workdir / "configmap"
    write_configmap_dir(volume, {"sidegate.yaml": yaml.safe_dump(s.cfg_data)})
    s.cfg_path = volume / "sidegate.yaml"
    env = dict(os.environ)
    env.pop("SIDEGATE_REDIS_URL", None)
    env.update(E2E_OPENAI_KEY=OPENAI_PROVIDER_KEY, E2E_ANTHROPIC_KEY=ANTHROPIC_PROVIDER_KEY)
    env["SIDEGATE_ADMIN_TOKEN"] = ADMIN_TOKEN
    env.setdefault("SIDEGATE_LOG_LEVEL", "INFO")
    cfg = config_mod.load(s.cfg_path, env=env)
    assert cfg.services.xds, "the live path is the xDS one (services.xds, default true)"
    s.sup = Supervisor(cfg_path=s.cfg_path, cfg=cfg, workdir=s.workdir, env=env, log_to_files=True)
    s.sup.start()
    yield s
    s.stop()


def _pids(s: Stack) -> dict[str, int]:
    assert s.sup is not None
    return {c.name: c.proc.pid for c in s.sup.children if c.proc is not None}


def _publish(s: Stack, data: dict[str, Any]) -> float:
    assert s.cfg_path is not None
    write_configmap_dir(s.cfg_path.parent, {"sidegate.yaml": yaml.safe_dump(data)})
    return time.monotonic()


def _ask(client: openai.OpenAI, model: str = "gpt-4o-mini") -> str:
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello"}])
    return r.choices[0].message.content or ""


@pytest.mark.alone  # bounds a duration
def test_a_changed_chain_in_the_configmap_is_served_within_seconds(
    cm_stack: Stack, fake_openai, fake_anthropic
):
    s = cm_stack
    client = openai.OpenAI(base_url=s.base_url + "/v1", api_key=s.keys["acme"].key, max_retries=0)
    assert _ask(client)
    assert len(fake_openai.requests) == 1 and not fake_anthropic.requests
    pids, epoch = _pids(s), s.stat("server.hot_restart_epoch")

    changed = copy.deepcopy(s.cfg_data)
    changed["models"]["gpt-4o-mini"]["routes"] = [
        {"provider": "anthropic", "model": "claude-3-5-haiku-20241022"},
        {"provider": "openai"},
    ]
    changed["models"]["gpt-live"] = {"routes": [{"provider": "openai", "model": "gpt-4o-2024-08-06"}]}
    t0 = _publish(s, changed)
    elapsed = None
    while time.monotonic() - t0 < APPLY_WITHIN_S + 3:  # bounded: measure, then assert the bound
        assert _ask(client), "no request fails while the change applies"
        if fake_anthropic.requests:
            elapsed = time.monotonic() - t0
            break
        time.sleep(0.05)
    assert elapsed is not None and elapsed <= APPLY_WITHIN_S, f"applied after {elapsed} s"
    assert fake_anthropic.requests[-1].json["model"] == "claude-3-5-haiku-20241022"
    assert "gpt-live" in {m.id for m in client.models.list()}
    assert _ask(client, "gpt-live")
    assert _pids(s) == pids, "no process was restarted"
    assert s.stat("server.hot_restart_epoch") == epoch, "Envoy was not hot-restarted"
    s.cfg_data = changed


@pytest.mark.alone  # bounds a duration
def test_a_refused_configmap_change_leaves_traffic_untouched(cm_stack: Stack, fake_openai, fake_anthropic):
    s = cm_stack
    client = openai.OpenAI(base_url=s.base_url + "/v1", api_key=s.keys["acme"].key, max_retries=0)
    pids = _pids(s)
    bad = copy.deepcopy(s.cfg_data)
    bad["models"]["gpt-4o-mini"]["routes"] = [{"provider": "no-such-provider"}]
    t0 = _publish(s, bad)
    while time.monotonic() - t0 < APPLY_WITHIN_S + 1:  # past the point a good change would apply
        fake_anthropic.reset()
        assert _ask(client)
        assert fake_anthropic.requests, "still the last good chain (anthropic first)"
        time.sleep(0.1)
    assert _pids(s) == pids
    # Fixing the file applies again.
    t0 = _publish(s, s.cfg_data)
    assert _ask(client) and time.monotonic() - t0 < APPLY_WITHIN_S + 1
