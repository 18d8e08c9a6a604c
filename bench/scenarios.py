"""The benchmark's scenarios: the request bodies, the Sidegate configurations, and how each path
under test (Envoy alone, a Sidegate stack, LiteLLM) is started and stopped."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench import upstream
from bench.measure import check_chat_completion, ttft, wrk_script
from sidegate import config as config_mod
from sidegate import keys
from sidegate.bootstrap import render
from sidegate.ports import free_port, free_port_block, wait_for_port
from sidegate.supervisor import Supervisor, envoy_binary, envoy_concurrency

CHAT = b'{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"What is the capital of France?"}],"max_tokens":32}'


@dataclass
class Scenario:
    """One path under test, set up once and measured in every round (see bench/run.py: main)."""

    name: str
    url: str
    script: Path
    pids: list[int]
    stop: Callable[[], None]
    note: Callable[[], str] | None = None
    kinds: dict[int, str] = field(default_factory=dict)
    """pid -> process kind (envoy, extproc, store, fake, litellm, ...): the CPU split per kind."""


SCENARIOS = ("direct,envoy,sidegate,inline,inline-2w,full-lane,translated,exact-hit,semantic-hit,"
             "front,front-2w,front-translated,front-translated-2w,front-exact-hit,envoy-stream,front-stream,front-stream-translated,"
             "envoy-stream500,front-stream500,front-stream500-translated,front-semantic-hit,semantic-paraphrase,front-semantic-paraphrase,"
             "litellm,litellm-translated,portkey,portkey-translated,ttft,responses,responses-full-lane,responses-translated,front-responses,"
             "front-responses-translated,front-responses-stream,front-responses-stream-translated,traced100,traced1")
FULL_PIPELINE = frozenset({"translated", "front-translated", "front-translated-2w", "front-stream-translated", "front-stream500-translated",
                           "responses-translated", "front-responses-translated", "front-responses-stream-translated",
                           "traced100", "traced1", "mesh-inline", "mesh-ext-authz"})
"""The scenarios of the issue's full pipeline: translation both ways and, as each request asks a
new question (see wrk_script in bench/measure.py), an exact-cache miss that fills. A translated
scenario left out of it asks one question again and again: it measures exact-cache hits."""
STREAM = CHAT.replace(b'"max_tokens":32', b'"max_tokens":32,"stream":true,"stream_options":{"include_usage":true}')
"""A stream whose events carry the usage (the direct lane takes it); the fast fake sends it at once,
so the latency measured is the time to the first event (the stream's overhead: TTFT)."""

STREAM500 = STREAM.replace(b"capital of France?", b"capital of France? (500 events)")
"""STREAM answered by the fast fake with its 500-event stream (bench/upstream.py: LONG_HEADER; see
wrk_script): wrk's latency is then the burst's last byte, and CPU per request the stream's cost."""


RESPONSES = b'{"model":"gpt-4o-mini","instructions":"You are terse.","input":"What is the capital of France?","max_output_tokens":32,"store":false}'
"""CHAT as a Responses request (`POST /v1/responses`): the Responses twins of the chat scenarios.
`store: false`, as chat keeps nothing either: an answer the gateway keeps (OpenAI's default) takes
the per-try stage, which would put the direct-lane twins on another lane."""
RESPONSES_STREAM = RESPONSES.replace(b'"max_output_tokens":32', b'"max_output_tokens":32,"stream":true')
"""A Responses stream (always with its usage, in response.completed: the direct lane takes it)."""


def path_of(body: bytes) -> str:
    """The API path a scenario's body is posted to."""
    return "/v1/responses" if b'"input":' in body else "/v1/chat/completions"


FRONT = {"auth": "inline", "front": "http"}
"""The default configuration since issue 25 (the HTTP front, inline auth): the `front*` scenarios."""
GRPC = {"auth": "ext_authz", "front": "ext_proc"}
"""The gRPC front with the separate authz service (the default before issue 25): `sidegate`, `responses`."""
GRPC_INLINE = {"auth": "inline", "front": "ext_proc"}
"""The gRPC front with auth inline: `inline`, `translated`, `full-lane`, the hits, `traced*` (names
older than the HTTP front)."""
GATEWAY: list[tuple[str, dict[str, object], bytes]] = [
    ("sidegate", GRPC, CHAT), ("inline", GRPC_INLINE, CHAT),
    ("inline-2w", {**GRPC_INLINE, "extproc_workers": 2}, CHAT),
    ("full-lane", {**GRPC_INLINE, "direct_lane": False}, CHAT),
    ("translated", GRPC_INLINE, CHAT.replace(b'"gpt-4o-mini"', b'"claude"')),
    ("exact-hit", GRPC_INLINE, CHAT.replace(b'"gpt-4o-mini"', b'"cached"')),
    ("semantic-hit", GRPC_INLINE, CHAT.replace(b'"gpt-4o-mini"', b'"semantic"')),
    # Issue 25 semantic hits: the HTTP front, and paraphrases (PARAPHRASE: see paraphrase_script).
    ("front-semantic-hit", FRONT, CHAT.replace(b'"gpt-4o-mini"', b'"semantic"')),
    ("semantic-paraphrase", GRPC_INLINE, CHAT.replace(b'"gpt-4o-mini"', b'"semantic"')),
    ("front-semantic-paraphrase", FRONT, CHAT.replace(b'"gpt-4o-mini"', b'"semantic"')),
    ("front", FRONT, CHAT), ("front-2w", {**FRONT, "extproc_workers": 2}, CHAT),
    ("front-translated", FRONT, CHAT.replace(b'"gpt-4o-mini"', b'"claude"')),
    ("front-translated-2w", {**FRONT, "extproc_workers": 2}, CHAT.replace(b'"gpt-4o-mini"', b'"claude"')),
    ("front-exact-hit", FRONT, CHAT.replace(b'"gpt-4o-mini"', b'"cached"')),
    ("front-stream", FRONT, STREAM),  # direct-lane stream (usage in its events)
    ("front-stream-translated", FRONT, STREAM.replace(b'"gpt-4o-mini"', b'"claude"')),  # per-try gRPC stream
    ("front-stream500", FRONT, STREAM500), ("front-stream500-translated", FRONT, STREAM500.replace(b'"gpt-4o-mini"', b'"claude"')),
    # The mesh snippets' shape (k8s/mesh/: the gRPC front, no direct lane), translated: as rendered
    # (inline auth) and as before (the separate authz service).
    ("mesh-inline", {**GRPC_INLINE, "direct_lane": False}, CHAT.replace(b'"gpt-4o-mini"', b'"claude"')),
    ("mesh-ext-authz", {**GRPC, "direct_lane": False}, CHAT.replace(b'"gpt-4o-mini"', b'"claude"')),
    # The Responses twins: same lane, same provider kind (an OpenAI provider serving Responses
    # takes it as is; Anthropic gets it translated).
    ("responses", GRPC, RESPONSES), ("responses-full-lane", {**GRPC_INLINE, "direct_lane": False}, RESPONSES),
    ("responses-translated", GRPC_INLINE, RESPONSES.replace(b'"gpt-4o-mini"', b'"claude"')),
    ("front-responses", FRONT, RESPONSES),
    ("front-responses-translated", FRONT, RESPONSES.replace(b'"gpt-4o-mini"', b'"claude"')),
    ("front-responses-stream", FRONT, RESPONSES_STREAM),
    ("front-responses-stream-translated", FRONT, RESPONSES_STREAM.replace(b'"gpt-4o-mini"', b'"claude"')),
    # The full pipeline (as `translated`) with OpenTelemetry traces sent to an OTLP receiver: every
    # request traced (Envoy's span and Sidegate's), or one in a hundred (TRACED).
    ("traced100", GRPC_INLINE, CHAT.replace(b'"gpt-4o-mini"', b'"claude"')),
    ("traced1", GRPC_INLINE, CHAT.replace(b'"gpt-4o-mini"', b'"claude"')),
]
"""The scenarios that start a Sidegate stack: (name, services config, request body)."""
VARIANTS = ("-e1", "-e2", "-nolease", "-noindex", "-traced100", "-traced1", "-2t", "-l6", "-l3", "-lean")
"""Suffixes that run a Sidegate scenario with one or two Envoy workers, without quota leases,
without the cache key index, traced (every request, one in a hundred), with two embedding
threads (`semantic.workers: 2`), with the 6-layer / 3-layer sentence encoder (`semantic.model`),
or with the ext_proc streams on the lean gRPC server (`services.grpc_server: lean`)."""
MODEL_VARIANTS = {"-l6": "all-minilm-l6-v2", "-l3": "paraphrase-minilm-l3-v2"}
TRACED = {"traced100": 1.0, "traced1": 0.01, "-traced100": 1.0, "-traced1": 0.01}
"""The traced scenarios and variants: their `observability.tracing.sample_ratio`."""


PARAPHRASE = frozenset({"semantic-paraphrase", "front-semantic-paraphrase"})
"""Semantic-hit scenarios that cycle through paraphrases (tests/fixtures/semantic/paraphrases.jsonl)
with the recent-embeddings LRU off: every lookup runs the model, as a never-seen paraphrase does."""


def paraphrase_setup(data: dict, script: Path, key: str, pairs: int = 60) -> None:
    """Turn a semantic-hit scenario into a paraphrase one: both sides of the set's first `pairs`
    paraphrase pairs, cycled (the warm-up fills them; measured requests hit their own or their
    twin's entry); `semantic.recent_embeddings: 0`, so no lookup reuses an embedding."""
    import json

    fixture = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "semantic" / "paraphrases.jsonl"
    rows = [json.loads(line) for line in fixture.read_text().splitlines() if line.strip()]
    texts = list(dict.fromkeys(t for r in rows if r["hit"] for t in (r["a"], r["b"])))[: 2 * pairs]
    template = json.loads(CHAT.replace(b'"gpt-4o-mini"', b'"semantic"'))
    bodies = []
    for t in texts:
        template["messages"][-1]["content"] = t
        bodies.append("[[" + json.dumps(template, separators=(",", ":")) + "]]")
    # max_pending above the connections: the c=16 warm-up would otherwise shed lookups and fills
    # (each shed one a miss that goes upstream), and the measured rows would mix in misses.
    data["semantic"] = {**data.get("semantic", {}), "recent_embeddings": 0, "max_pending": 64}
    script.write_text(
        f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {key}"\n'
        "local bodies = {" + ",\n".join(bodies) + "}\nlocal n = 0\n"
        "function request() n = n + 1; return wrk.format(nil, nil, nil, bodies[n % #bodies + 1]) end\n"
    )


def cache_lookups(metrics_port: int) -> str:
    """The extproc's response-cache lookups by result so far (warm-up included): whether a semantic
    scenario measured hits."""
    import re
    import urllib.request

    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    except OSError as exc:
        return f"cache lookups: metrics unavailable ({exc})"
    found = re.findall(r'^sidegate_cache_lookups_total\{result="([^"]+)"\} ([\d.e+]+)', text, re.M)
    return "cache lookups " + ", ".join(f"{k}={float(v):.0f}" for k, v in found)


def split_variant(name: str) -> tuple[str, str]:
    """`front-translated-nolease` -> (`front-translated`, `-nolease`)."""
    for v in VARIANTS:
        if name.endswith(v):
            return name.removesuffix(v), v
    return name, ""


def sidegate_config(fport: int, key: str, kid: str, **services: object) -> dict:
    """A Sidegate config on the fake upstream at ``fport`` with fresh ports, the bench tenant's key
    and the given ``services`` settings (the scenario's)."""
    return {
        "listener": {"port": free_port(), "admin_port": free_port()},
        "services": {"authz_port": free_port_block(4), "extproc_port": free_port_block(4), "front_port": free_port_block(4), "lean_port": free_port_block(4), "metrics_port": free_port(),
                     "authz_metrics_port": free_port(), "xds_port": free_port(), **services},
        "observability": {"access_log": None},
        # The fast fake picks a stream by the client's `x-bench-*` headers (bench/upstream.py): without
        # forward_client_headers the gateway's header allow-list drops them, and a "stream" scenario
        # got the JSON answer.
        "providers": {"openai": {"api": "openai", "base_url": f"http://127.0.0.1:{fport}", "api_key_env": "BENCH_KEY",
                                 "forward_client_headers": ["x-bench-*"]},
                      "anthropic": {"api": "anthropic", "base_url": f"http://127.0.0.1:{fport}", "api_key_env": "BENCH_KEY",
                                    "forward_client_headers": ["x-bench-*"]}},
        "models": {
            "gpt-4o-mini": {"routes": [{"provider": "openai"}]},
            # The full pipeline's model (FULL_PIPELINE): translated, cached.
            "claude": {"routes": [{"provider": "anthropic", "model": "claude-3-5-haiku-20241022"}], "cache": {"exact": True}},
            "cached": {"routes": [{"provider": "openai", "model": "gpt-4o-mini"}], "cache": {"exact": True}},
            "semantic": {"routes": [{"provider": "openai", "model": "gpt-4o-mini"}],
                         "cache": {"semantic": True, "semantic_timeout_ms": 500}},
        },
        # Limits the load never reaches, so every request is checked against them (rpm and tpm).
        "tenants": {"bench": {"keys": [{"id": kid, "hash": keys.hash_key(key)}],
                              "quota": {"limits": {"rpm": 10**9, "tpm": 10**12}}}},
    }  # fmt: skip


@dataclass
class Bed:
    """What every bench program sets up first: a work directory, the fast fake upstream (its port
    and process), the bench tenant's key, its config maker and the services' environment."""

    work: Path
    fport: int
    fake: subprocess.Popen[bytes]
    key: str
    config: Callable[..., dict]
    env: dict[str, str]


def setup_bed(prefix: str) -> Bed:
    """The fake upstream started (the caller waits for its port and terminates it) and a new key."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    fport = free_port()
    fake = upstream.start(envoy_binary(), work, fport, free_port())
    key, kid = keys.new_key()
    env = dict(os.environ, BENCH_KEY="sk-bench", SIDEGATE_LOG_LEVEL="WARNING")
    return Bed(work, fport, fake, key, functools.partial(sidegate_config, fport, key, kid), env)


def start_stack(work: Path, name: str, data: dict, env: dict[str, str]) -> Supervisor:
    """A Sidegate stack for config ``data``, started by the supervisor as `sidegate up` would (its
    logs in files under the scenario's own directory); ready when it returns."""
    d = work / name
    d.mkdir()
    cfg_path = d / "sidegate.yaml"
    cfg_path.write_text(yaml.safe_dump(data))
    sup = Supervisor(cfg_path=cfg_path, cfg=config_mod.load(cfg_path, env=env), workdir=d, env=env, log_to_files=True)
    sup.start(timeout_s=60)
    return sup


def start_envoy_alone(work: Path, name: str, cfg: config_mod.SidegateConfig, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Envoy with the same listener and clusters and no Sidegate filter (the baseline), with as
    many workers as Sidegate's Envoy gets (services.envoy_concurrency); ready when it returns."""
    b = work / f"{name}.yaml"
    b.write_text(yaml.safe_dump(render.bootstrap(cfg, sidegate_filters=False)))
    e = subprocess.Popen([envoy_binary(), "-c", str(b), "--use-dynamic-base-id", "-l", "error",
                          "--concurrency", str(envoy_concurrency(cfg, env))])  # fmt: skip
    try:
        wait_for_port("127.0.0.1", cfg.listener.port, 10, e)
    except BaseException:
        e.kill()
        raise
    return e


def litellm_scenarios(work: Path, fport: int, pids: list[int], names: set[str]) -> list[Scenario]:
    """The LiteLLM proxy (1 worker) on the same fake upstream, if installed: LITELLM_BIN, or
    `litellm` on PATH (e.g. `python -m venv /tmp/ll && /tmp/ll/bin/pip install 'litellm[proxy]==1.106.*'`).
    `litellm`: an OpenAI client on an OpenAI provider (no translation); `litellm-translated`: the
    same client on an Anthropic provider, LiteLLM translating both ways (the full pipeline's job)."""
    exe = os.environ.get("LITELLM_BIN") or shutil.which("litellm")
    if not exe:
        print("litellm: not installed (set LITELLM_BIN); row skipped", file=sys.stderr)
        return []
    port = free_port()
    cfg = work / "litellm.yaml"
    cfg.write_text(yaml.safe_dump({
        "model_list": [
            {"model_name": "gpt-4o-mini", "litellm_params": {
                "model": "openai/gpt-4o-mini", "api_base": f"http://127.0.0.1:{fport}/v1", "api_key": "sk-bench"}},
            {"model_name": "claude", "litellm_params": {
                "model": "anthropic/claude-3-5-haiku-20241022", "api_base": f"http://127.0.0.1:{fport}", "api_key": "sk-bench"}},
        ],
        "litellm_settings": {"telemetry": False, "drop_params": True},
    }))  # fmt: skip
    master = "sk-" + os.urandom(16).hex()  # LiteLLM refuses to start without one (and checks it per request)
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR", LITELLM_MASTER_KEY=master)
    proc = subprocess.Popen([exe, "--config", str(cfg), "--port", str(port), "--host", "127.0.0.1", "--num_workers", "1"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

    def stop() -> None:
        proc.terminate()
        proc.wait(10)

    try:
        wait_for_port("127.0.0.1", port, 120, proc)
    except BaseException:
        stop()
        raise
    time.sleep(2)
    out = []
    for name, body in (("litellm", CHAT), ("litellm-translated", CHAT.replace(b'"gpt-4o-mini"', b'"claude"'))):
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        if name in names and (problem := check_chat_completion(url, body, {"authorization": f"Bearer {master}"})):
            print(f"{name}: no proper chat.completion from LiteLLM ({problem}); row skipped", file=sys.stderr)
        elif name in names:
            script = work / f"{name}.lua"
            wrk_script(script, body, master)
            # The process stops with the last of its scenarios (they are stopped in reverse order).
            out.append(Scenario(name, f"http://127.0.0.1:{port}/v1/chat/completions", script, [proc.pid, *pids],
                                stop if not out else (lambda: None), kinds={proc.pid: "litellm"}))  # fmt: skip
    if not out:
        stop()
    return out


def ttft_notes(work: Path, config: Callable[..., dict], env: dict[str, str], key: str) -> list[str]:
    """Streaming time to first content event with a Python client and the Python fake provider."""
    from sidegate.fakes import FakeProviderThread

    path = "/v1/chat/completions"
    with FakeProviderThread(port=0, chunks=5, chunk_delay_s=0.01) as fp:
        data = config(auth="inline")
        data["providers"]["openai"]["base_url"] = fp.url
        direct = ttft(fp.url + path, {})
        cfg = config_mod.parse(data, env=env)
        e = start_envoy_alone(work, "envoy-ttft", cfg, env)
        try:
            alone = ttft(f"http://127.0.0.1:{cfg.listener.port}{path}", {})
        finally:
            e.terminate()
            e.wait(10)
        fulls = {}
        for label, svc, usage in (("inline auth", {}, False), ("HTTP front", {"front": "http"}, False),
                                  ("HTTP front, include_usage: direct lane", {"front": "http"}, True)):  # fmt: skip
            data["listener"] = {"port": free_port(), "admin_port": free_port()}
            data["services"].update(svc)
            sup = start_stack(work, f"ttft-{len(fulls)}", data, env)
            try:
                fulls[label] = ttft(f"http://127.0.0.1:{sup.cfg.listener.port}{path}", {"authorization": f"Bearer {key}"},
                                    usage=usage)  # fmt: skip
            finally:
                sup.stop()
    return [f"streaming TTFT p50/p99 ms: direct {direct[0]:.2f}/{direct[1]:.2f}, Envoy alone "
            f"{alone[0]:.2f}/{alone[1]:.2f}, Sidegate ({label}) {full[0]:.2f}/{full[1]:.2f} "
            f"-> added vs Envoy {full[0] - alone[0]:+.2f} ms" for label, full in fulls.items()]  # fmt: skip


def trace_notes(receiver: Any, names: list[str]) -> list[str]:
    """What the OTLP receiver got from each traced scenario (each exports under its own service
    name): spans, Sidegate's among them, and the traces (the share of requests sampled). The
    receiver keeps the last `max_spans` only: the counts are of what it still holds."""
    out = []
    for name in names:
        spans = receiver.spans(service=f"bench-{name}")
        if spans:
            ours = sum(s.scope == "sidegate" for s in spans)
            traces = len({s.trace_id for s in spans})
            out.append(f"{name}: OTLP receiver holds {len(spans)} spans ({ours} Sidegate's) of {traces} traces "
                       f"(exports so far: {receiver.exports}, dropped to stay bounded: {receiver.dropped})")  # fmt: skip
    return out
