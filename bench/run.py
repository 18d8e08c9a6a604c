"""Sidegate benchmark: added latency and throughput of the gateway, measured with wrk.

    python bench/run.py [--duration 10] [--conns 1,16] [--rounds 3] [--only direct,envoy,sidegate]

Every scenario is set up first, then measured --rounds times in turn (interleaved), and the table
shows medians: the host's speed drifts between minutes, and this way it weighs on every row alike.

Scenarios (same fast fake upstream for all):
  direct    wrk -> fake upstream
  envoy     wrk -> Envoy (same bootstrap, Sidegate filters off) -> fake
  sidegate  wrk -> Envoy + ext_authz + gateway ext_proc; direct lane (Envoy alone per try) -> fake
  inline    the same with auth in the gateway (services.auth: inline)
  full-lane inline, direct lane off: every try through the per-try ext_proc
  translated inline, OpenAI client -> Anthropic provider (per-try translation both ways) with an
            exact-cache miss that fills: each request asks a new question (the issue's full pipeline)
  litellm   wrk -> LiteLLM proxy (1 worker; only if installed, see _litellm) -> fake; and
            litellm-translated: LiteLLM translating an OpenAI client's request for an Anthropic provider
  front     the gateway stages behind the HTTP front (services.front: http) instead of gRPC ext_proc;
            front-2w with two extproc workers, front-translated, front-exact-hit likewise
  <name>-e1 any Sidegate scenario with one Envoy worker thread, -e2 with two (the default is
            auto: see services.envoy_concurrency; one worker on this box)
  <name>-nolease any Sidegate scenario with quota leases off (quota.lease.enabled: false): every
            request reserves in the store
  <name>-noindex any Sidegate scenario without the local index of the cache's keys
            (store.cache_index: false): every exact lookup asks the store
Prints p50/p99 latency, RPS, added p50 vs Envoy-alone and CPU ms per request (all processes of
the scenario, read from /proc). Needs `wrk` (Debian: apt-get install wrk).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import upstream
from sidegate import config as config_mod
from sidegate import keys
from sidegate.bootstrap import render
from sidegate.ports import free_port, free_port_block, wait_for_port
from sidegate.supervisor import Supervisor, envoy_binary, envoy_concurrency

CHAT = b'{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"What is the capital of France?"}],"max_tokens":32}'
TICK = os.sysconf("SC_CLK_TCK")


_VARY = """
-- Every request a new question (a cache miss): the question gets a suffix of letters (digits
-- would read as PII) made of the time, the thread and a counter.
local function letters(x)
  local s = ""
  repeat s = s .. string.char(97 + x % 26); x = math.floor(x / 26) until x == 0
  return s
end
local threads, n = 0, 0
function setup(thread) threads = threads + 1; thread:set("tid", threads) end
function init(args) prefix = letters(os.time()) .. " " .. letters(tid or 0) .. " " end
function request()
  n = n + 1
  return wrk.format(nil, nil, nil, string.gsub(wrk.body, "%?", "? " .. prefix .. letters(n), 1))
end
"""


def wrk_script(path: Path, body: bytes, key: str | None, vary: bool = False) -> None:
    """A wrk script posting `body`; with `vary`, each request's last question differs (see _VARY)."""
    headers = 'wrk.headers["Content-Type"] = "application/json"\n'
    if b'"stream":true' in body:  # the fast fake answers it as a stream
        headers += f'wrk.headers["{upstream.STREAM_HEADER}"] = "1"\n'
    if key:
        headers += f'wrk.headers["Authorization"] = "Bearer {key}"\n'
    path.write_text(f'wrk.method = "POST"\nwrk.body = [[{body.decode()}]]\n{headers}' + (_VARY if vary else ""))


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / TICK


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


def run_wrk(url: str, script: Path, conns: int, duration: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t", "1" if conns < 4 else "2", "-c", str(conns), "-d", f"{duration}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, timeout=duration + 60,
    ).stdout  # fmt: skip
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    reqs = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "p50": _ms(lat.get("50", "nan")), "p99": _ms(lat.get("99", "nan")),
        "rps": float(rps.group(1)) if rps else 0.0, "requests": float(reqs.group(1)) if reqs else 0.0,
        "errors": float(non2xx.group(1)) if non2xx else 0.0,
    }  # fmt: skip


def measure(name: str, url: str, script: Path, pids: list[int], conns: int, duration: int) -> dict:
    before = cpu_seconds(pids)
    r = run_wrk(url, script, conns, duration)
    used = cpu_seconds(pids) - before
    r.update(name=name, conns=conns, cpu_ms=1e3 * used / r["requests"] if r["requests"] else float("nan"))
    print(f"  {name:<9} c={conns:<3} p50={r['p50']:.3f}ms p99={r['p99']:.3f}ms rps={r['rps']:.0f} "
          f"non2xx={r['errors']:.0f} cpu/req={r['cpu_ms']:.3f}ms", flush=True)  # fmt: skip
    return r


@dataclass
class Scenario:
    """One path under test, set up once and measured in every round (see main)."""

    name: str
    url: str
    script: Path
    pids: list[int]
    stop: Callable[[], None]
    note: Callable[[], str] | None = None


def _median(values: list[float]) -> float:
    values = sorted(v for v in values if v == v)  # NaN (a missing baseline) left out
    if not values:
        return float("nan")
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


SCENARIOS = ("direct,envoy,sidegate,inline,inline-2w,full-lane,translated,exact-hit,semantic-hit,"
             "front,front-2w,front-translated,front-translated-2w,front-exact-hit,envoy-stream,front-stream,front-stream-translated,"
             "litellm,litellm-translated,ttft")
FULL_PIPELINE = frozenset({"translated", "front-translated", "front-translated-2w", "front-stream-translated"})
"""The scenarios of the issue's full pipeline: translation both ways and, as each request asks a
new question (see _VARY), an exact-cache miss that fills."""
STREAM = CHAT.replace(b'"max_tokens":32', b'"max_tokens":32,"stream":true,"stream_options":{"include_usage":true}')
"""A stream whose events carry the usage (the direct lane takes it); the fast fake sends it at once,
so the latency measured is the time to the first event (the stream's overhead: TTFT)."""


def _stack(work: Path, name: str, data: dict, env: dict[str, str]) -> Supervisor:
    d = work / name
    d.mkdir()
    cfg_path = d / "sidegate.yaml"
    cfg_path.write_text(yaml.safe_dump(data))
    sup = Supervisor(cfg_path=cfg_path, cfg=config_mod.load(cfg_path, env=env), workdir=d, env=env, log_to_files=True)
    sup.start(timeout_s=60)
    return sup


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def ttft(url: str, headers: dict[str, str], n: int = 200, usage: bool = False, warm: int = 100) -> tuple[float, float]:
    """p50/p99 ms from sending a streaming request to its first content event (`usage`: the client
    asks `stream_options.include_usage`, which lets a same-schema stream take the direct lane).
    The first `warm` requests are not counted (a fresh extproc needs a few seconds of traffic to
    reach its steady state; every path, Envoy alone included, gets the same warm-up)."""
    import httpx

    body: dict = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "Stream five words please."}]}
    if usage:
        body["stream_options"] = {"include_usage": True}
    samples = []
    with httpx.Client(timeout=10) as client:
        for i in range(n + warm):
            t0 = time.perf_counter()
            with client.stream("POST", url, json=body, headers=headers) as r:
                lines = r.iter_lines()
                for line in lines:
                    if line.startswith("data:") and '"content"' in line:
                        if i >= warm:
                            samples.append((time.perf_counter() - t0) * 1e3)
                        break
                for _ in lines:  # read the stream to its end
                    pass
    samples.sort()
    return samples[len(samples) // 2], samples[min(len(samples) - 1, int(len(samples) * 0.99))]


FRONT = {"auth": "inline", "front": "http"}
GATEWAY: list[tuple[str, dict[str, object], bytes]] = [
    ("sidegate", {}, CHAT), ("inline", {"auth": "inline"}, CHAT),
    ("inline-2w", {"auth": "inline", "extproc_workers": 2}, CHAT),
    ("full-lane", {"auth": "inline", "direct_lane": False}, CHAT),
    ("translated", {"auth": "inline"}, CHAT.replace(b'"gpt-4o-mini"', b'"claude"')),
    ("exact-hit", {"auth": "inline"}, CHAT.replace(b'"gpt-4o-mini"', b'"cached"')),
    ("semantic-hit", {"auth": "inline"}, CHAT.replace(b'"gpt-4o-mini"', b'"semantic"')),
    ("front", FRONT, CHAT), ("front-2w", {**FRONT, "extproc_workers": 2}, CHAT),
    ("front-translated", FRONT, CHAT.replace(b'"gpt-4o-mini"', b'"claude"')),
    ("front-translated-2w", {**FRONT, "extproc_workers": 2}, CHAT.replace(b'"gpt-4o-mini"', b'"claude"')),
    ("front-exact-hit", FRONT, CHAT.replace(b'"gpt-4o-mini"', b'"cached"')),
    ("front-stream", FRONT, STREAM),  # direct-lane stream (usage in its events)
    ("front-stream-translated", FRONT, STREAM.replace(b'"gpt-4o-mini"', b'"claude"')),  # per-try gRPC stream
]
"""The scenarios that start a Sidegate stack: (name, services config, request body)."""
VARIANTS = ("-e1", "-e2", "-nolease", "-noindex")
"""Suffixes that run a Sidegate scenario with one or two Envoy workers, without quota leases, or
without the cache key index."""


def _variant(name: str) -> tuple[str, str]:
    """`front-translated-nolease` -> (`front-translated`, `-nolease`)."""
    for v in VARIANTS:
        if name.endswith(v):
            return name.removesuffix(v), v
    return name, ""


def _litellm(work: Path, fport: int, pids: list[int], names: set[str]) -> list[Scenario]:
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
        if name in names:
            script = work / f"{name}.lua"
            wrk_script(script, body, master)
            # The process stops with the last of its scenarios (they are stopped in reverse order).
            out.append(Scenario(name, f"http://127.0.0.1:{port}/v1/chat/completions", script, [proc.pid, *pids],
                                stop if not out else (lambda: None)))  # fmt: skip
    return out


def _envoy_alone(work: Path, name: str, cfg: config_mod.SidegateConfig, env: dict[str, str]) -> subprocess.Popen[bytes]:
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


def _ttft_notes(work: Path, config: Callable[..., dict], env: dict[str, str], key: str) -> list[str]:
    """Streaming time to first content event with a Python client and the Python fake provider."""
    from sidegate.fakes import FakeProviderThread

    path = "/v1/chat/completions"
    with FakeProviderThread(port=0, chunks=5, chunk_delay_s=0.01) as fp:
        data = config(auth="inline")
        data["providers"]["openai"]["base_url"] = fp.url
        direct = ttft(fp.url + path, {})
        cfg = config_mod.parse(data, env=env)
        e = _envoy_alone(work, "envoy-ttft", cfg, env)
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
            sup = _stack(work, f"ttft-{len(fulls)}", data, env)
            try:
                fulls[label] = ttft(f"http://127.0.0.1:{sup.cfg.listener.port}{path}", {"authorization": f"Bearer {key}"},
                                    usage=usage)  # fmt: skip
            finally:
                sup.stop()
    return [f"streaming TTFT p50/p99 ms: direct {direct[0]:.2f}/{direct[1]:.2f}, Envoy alone "
            f"{alone[0]:.2f}/{alone[1]:.2f}, Sidegate ({label}) {full[0]:.2f}/{full[1]:.2f} "
            f"-> added vs Envoy {full[0] - alone[0]:+.2f} ms" for label, full in fulls.items()]  # fmt: skip


def _report(rows: list[dict], rounds: int) -> list[str]:
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
        added = _median([r["p50"] - ref[r["round"]]["p50"] for r in mine if r["round"] in ref])
        ratios = []
        for peer_name in ("litellm", "litellm-translated"):
            peer = {r["round"]: r["rps"] for r in runs(peer_name, conns)}
            ratios.append(_median([r["rps"] / peer[r["round"]] for r in mine if peer.get(r["round"])]))
        out.append(f"| {name} | {conns} | {_median([r['p50'] for r in mine]):.3f} | {_median([r['p99'] for r in mine]):.3f} "
                   f"| {_median([r['rps'] for r in mine]):.0f} | {added:+.3f} | {_median([r['cpu_ms'] for r in mine]):.3f} "
                   f"| {ratios[0]:.1f} | {ratios[1]:.1f} |")  # fmt: skip
    if rounds > 1:
        out.append("\nRPS per round:")
        for name, conns in keys_:
            out.append(f"  {name} c={conns}: " + ", ".join(f"{r['rps']:.0f}" for r in runs(name, conns)))
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--conns", default="1,16,32")
    ap.add_argument("--rounds", type=int, default=1,
                    help="measure every scenario this many times, interleaved; the table shows medians")  # fmt: skip
    ap.add_argument("--only", default=SCENARIOS, help=f"comma-separated subset of {SCENARIOS}")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2
    conns = [int(c) for c in args.conns.split(",")]
    only = set(args.only.split(","))
    known, gateway = set(SCENARIOS.split(",")), {name for name, _, _ in GATEWAY}
    if unknown := {n for n in only if n not in known and _variant(n)[0] not in gateway}:
        print(f"unknown scenarios: {sorted(unknown)} (known: {SCENARIOS}; any Sidegate one with "
              f"{' or '.join(VARIANTS)})", file=sys.stderr)  # fmt: skip
        return 2
    envoy = envoy_binary()
    work = Path(tempfile.mkdtemp(prefix="sidegate-bench-"))
    fport = free_port()
    fake = upstream.start(envoy, work, fport, free_port())
    key, kid = keys.new_key()

    def config(**services: object) -> dict:
        return {
            "listener": {"port": free_port(), "admin_port": free_port()},
            "services": {"authz_port": free_port_block(4), "extproc_port": free_port_block(4), "front_port": free_port_block(4), "metrics_port": free_port(),
                         "authz_metrics_port": free_port(), **services},
            "observability": {"access_log": None},
            "providers": {"openai": {"api": "openai", "base_url": f"http://127.0.0.1:{fport}", "api_key_env": "BENCH_KEY"},
                          "anthropic": {"api": "anthropic", "base_url": f"http://127.0.0.1:{fport}", "api_key_env": "BENCH_KEY"}},
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

    env = dict(os.environ, BENCH_KEY="sk-bench", SIDEGATE_LOG_LEVEL="WARNING")
    path = "/v1/chat/completions"
    scenarios: list[Scenario] = []
    rows: list[dict] = []
    notes: list[str] = []
    print(f"machine: {os.cpu_count()} cores; {args.duration}s per run, {args.rounds} round(s); "
          "upstream: Envoy direct_response; wrk on the same box")  # fmt: skip
    try:
        # Every scenario is set up first and measured in rounds, one after the other, so that the
        # host's speed (which drifts by ±25 % between minutes here) weighs on all of them alike.
        wait_for_port("127.0.0.1", fport, 10, fake)
        if "direct" in only:
            plain = work / "plain.lua"
            wrk_script(plain, CHAT, None)
            scenarios.append(Scenario("direct", f"http://127.0.0.1:{fport}{path}", plain, [fake.pid], lambda: None))
        for name, body in (("envoy", CHAT), ("envoy-stream", STREAM)):  # Envoy alone: the baselines
            if name not in only:
                continue
            cfg = config_mod.parse(config(), env=env)
            e = _envoy_alone(work, name, cfg, env)

            def stop(e: subprocess.Popen = e) -> None:
                e.terminate()
                e.wait(10)

            scenarios.append(Scenario(name, f"http://127.0.0.1:{cfg.listener.port}{path}", work / f"{name}.lua",
                                      [e.pid, fake.pid], stop))  # fmt: skip
            wrk_script(scenarios[-1].script, body, None)
        variants = [*GATEWAY, *((n + v, svc, body) for n, svc, body in GATEWAY for v in VARIANTS if n + v in only)]
        for name, services, body in variants:
            if name not in only:
                continue
            base, variant = _variant(name)
            data = config(**services)
            if variant == "-nolease":
                data["quota"] = {"lease": {"enabled": False}}
            if variant == "-noindex":
                data["store"] = {**data.get("store", {}), "cache_index": False}
            # `-e1` / `-e2`: Envoy with one / two worker threads (`services.envoy_concurrency`; auto
            # gives one on two cores beside one extproc).
            workers = {"SIDEGATE_ENVOY_CONCURRENCY": variant[2:]} if variant in ("-e1", "-e2") else {}
            sup = _stack(work, name, data, env | workers)
            script = work / f"{name}.lua"
            wrk_script(script, body, key, vary=base in FULL_PIPELINE)
            children = [c.proc for c in sup.children if c.proc]

            def rss(sup: Supervisor = sup, name: str = name) -> str:
                mb = {c.name: round(_rss_mb(c.proc.pid)) for c in sup.children if c.proc and c.name != "envoy"}
                return f"{name}: RSS MB after the runs {mb}"

            scenarios.append(Scenario(name, f"http://127.0.0.1:{sup.cfg.listener.port}{path}", script,
                                      [p.pid for p in children] + [fake.pid], sup.stop, rss))  # fmt: skip
        if {"litellm", "litellm-translated"} & only:
            scenarios += _litellm(work, fport, [fake.pid], only)
        for s in scenarios:
            run_wrk(s.url, s.script, 16, 3)  # warm-up: connections, caches, a steady state (every scenario alike)
        for round_ in range(args.rounds):
            if args.rounds > 1:
                print(f"round {round_ + 1} of {args.rounds}", flush=True)
            k = round_ % len(scenarios)  # each round starts one scenario later: no row always goes first
            for s in scenarios[k:] + scenarios[:k]:
                for c in conns:
                    rows.append(measure(s.name, s.url, s.script, s.pids, c, args.duration) | {"round": round_})
        notes += [s.note() for s in scenarios if s.note]
    finally:
        for s in reversed(scenarios):
            try:
                s.stop()
            except Exception as exc:  # one stuck process must not keep the others running
                print(f"{s.name}: stop failed: {exc!r}", file=sys.stderr)
        fake.terminate()
        time.sleep(0.2)
    for line in _report(rows, args.rounds) + notes:
        print(line, flush=True)
    if "ttft" in only:  # after the table: a failure here loses none of the rounds
        for line in _ttft_notes(work, config, env, key):
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
