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
  litellm   wrk -> LiteLLM proxy (1 worker; only if installed, see bench/scenarios.py: litellm_scenarios) -> fake; and
            litellm-translated: LiteLLM translating an OpenAI client's request for an Anthropic provider
  portkey   wrk -> Portkey's open-source gateway (npm @portkey-ai/gateway, one Node process; installed
            by the bench from the npm registry if missing, see bench/peers.py) -> fake; and
            portkey-translated: Portkey translating an OpenAI client's request for an Anthropic provider
  responses the Responses API twins of sidegate, full-lane, translated, front, front-translated,
            front-stream, front-stream-translated (`responses-...`, `front-responses-...`): the same
            lane and provider kind, POST /v1/responses
  front     the gateway stages behind the HTTP front (services.front: http) instead of gRPC ext_proc;
            front-2w with two extproc workers, front-translated, front-exact-hit likewise
  envoy-stream500, front-stream500, front-stream500-translated: the stream scenarios with the fast
            fake's 500-event stream (all sent at once); bench/stream_bench.py has time to first event
  <name>-e1 any Sidegate scenario with one Envoy worker thread, -e2 with two (the default is
            auto: see services.envoy_concurrency; one worker on this box)
  <name>-nolease any Sidegate scenario with quota leases off (quota.lease.enabled: false): every
            request reserves in the store
  <name>-lean any Sidegate scenario with the ext_proc streams on the lean gRPC server
            (services.grpc_server: lean, extproc/h2c.py)
  <name>-noindex any Sidegate scenario without the local index of the cache's keys
            (store.cache_index: false): every exact lookup asks the store
  traced100 translated (the full pipeline) with OpenTelemetry traces to an OTLP receiver (Sidegate's
            OTLP fake, in this process): every request traced; traced1: one request in a hundred.
            <name>-traced100 / <name>-traced1: any Sidegate scenario so traced
Prints p50/p99 latency, RPS, added p50 vs Envoy-alone and CPU ms per request (all processes of
the scenario, read from /proc), then the CPU per request per process kind (envoy, extproc, ...). Needs `wrk` (Debian: apt-get install wrk).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.measure import measure, process_kind, rss_mb, run_wrk, wrk_script
from bench.peers import portkey_scenarios
from bench.report import report
from bench.scenarios import (
    CHAT,
    FULL_PIPELINE,
    GATEWAY,
    MODEL_VARIANTS,
    PARAPHRASE,
    SCENARIOS,
    STREAM,
    STREAM500,
    TRACED,
    VARIANTS,
    Scenario,
    cache_lookups,
    litellm_scenarios,
    paraphrase_setup,
    path_of,
    setup_bed,
    split_variant,
    start_envoy_alone,
    start_stack,
    trace_notes,
    ttft_notes,
)
from sidegate import config as config_mod
from sidegate.fakes.otlp import OtlpReceiverThread
from sidegate.ports import wait_for_port
from sidegate.supervisor import Supervisor


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--conns", default="1,16,32")
    ap.add_argument("--rounds", type=int, default=1,
                    help="measure every scenario this many times, interleaved; the table shows medians")  # fmt: skip
    ap.add_argument("--only", default=SCENARIOS, help=f"comma-separated subset of {SCENARIOS}")
    ap.add_argument("--keep", action="store_true",
                    help="keep the run's directory (configs, logs); by default it is deleted after a run that completes")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2
    conns = [int(c) for c in args.conns.split(",")]
    only = set(args.only.split(","))
    known, gateway = set(SCENARIOS.split(",")), {name for name, _, _ in GATEWAY}
    if unknown := {n for n in only if n not in known and split_variant(n)[0] not in gateway}:
        print(f"unknown scenarios: {sorted(unknown)} (known: {SCENARIOS}; any Sidegate one with "
              f"{' or '.join(VARIANTS)})", file=sys.stderr)  # fmt: skip
        return 2
    bed = setup_bed("sidegate-bench-")
    work, fport, fake, key, config, env = bed.work, bed.fport, bed.fake, bed.key, bed.config, bed.env
    path = "/v1/chat/completions"
    scenarios: list[Scenario] = []
    rows: list[dict] = []
    notes: list[str] = []
    receiver: OtlpReceiverThread | None = None
    """The OTLP receiver of the traced scenarios (started with the first)."""
    print(f"machine: {os.cpu_count()} cores; {args.duration}s per run, {args.rounds} round(s); "
          "upstream: Envoy direct_response; wrk on the same box")  # fmt: skip
    try:
        # Every scenario is set up first and measured in rounds, one after the other, so that the
        # host's speed (which drifts by ±25 % between minutes here) weighs on all of them alike.
        wait_for_port("127.0.0.1", fport, 10, fake)
        if "direct" in only:
            plain = work / "plain.lua"
            wrk_script(plain, CHAT, None)
            scenarios.append(Scenario("direct", f"http://127.0.0.1:{fport}{path}", plain, [fake.pid], lambda: None,
                                      kinds={fake.pid: "fake"}))  # fmt: skip
        for name, body in (("envoy", CHAT), ("envoy-stream", STREAM), ("envoy-stream500", STREAM500)):  # Envoy alone: the baselines
            if name not in only:
                continue
            cfg = config_mod.parse(config(), env=env)
            e = start_envoy_alone(work, name, cfg, env)

            def stop(e: subprocess.Popen = e) -> None:
                e.terminate()
                e.wait(10)

            scenarios.append(Scenario(name, f"http://127.0.0.1:{cfg.listener.port}{path}", work / f"{name}.lua",
                                      [e.pid, fake.pid], stop, kinds={e.pid: "envoy"}))  # fmt: skip
            wrk_script(scenarios[-1].script, body, None)
        variants = [*GATEWAY, *((n + v, svc, body) for n, svc, body in GATEWAY for v in VARIANTS if n + v in only)]
        for name, services, body in variants:
            if name not in only:
                continue
            base, variant = split_variant(name)
            data = config(**services)
            if variant == "-nolease":
                data["quota"] = {"lease": {"enabled": False}}
            if variant == "-noindex":
                data["store"] = {**data.get("store", {}), "cache_index": False}
            if variant == "-lean":
                data["services"]["grpc_server"] = "lean"
            if variant == "-2t":
                data["semantic"] = {**data.get("semantic", {}), "workers": 2}
            if variant in MODEL_VARIANTS:
                data["semantic"] = {**data.get("semantic", {}), "model": MODEL_VARIANTS[variant]}
            ratio = TRACED.get(base, TRACED.get(variant))
            if ratio is not None:  # its own service name: the receiver counts each scenario's spans
                if receiver is None:
                    receiver = OtlpReceiverThread(max_spans=20_000).start()
                data["observability"] = {**data["observability"], "tracing": {
                    "endpoint": receiver.endpoint, "sample_ratio": ratio, "service_name": f"bench-{name}"}}  # fmt: skip
            # `-e1` / `-e2`: Envoy with one / two worker threads (`services.envoy_concurrency`; auto
            # gives one on two cores beside one extproc).
            workers = {"SIDEGATE_ENVOY_CONCURRENCY": variant[2:]} if variant in ("-e1", "-e2") else {}
            script = work / f"{name}.lua"
            if base in PARAPHRASE:
                paraphrase_setup(data, script, key)
            sup = start_stack(work, name, data, env | workers)
            if base not in PARAPHRASE:
                wrk_script(script, body, key, vary=base in FULL_PIPELINE)
            children = [c.proc for c in sup.children if c.proc]

            def rss(sup: Supervisor = sup, name: str = name) -> str:
                mb = {c.name: round(rss_mb(c.proc.pid)) for c in sup.children if c.proc and c.name != "envoy"}
                hits = f"; {cache_lookups(sup.cfg.services.metrics_port)}" if "semantic" in name else ""
                return f"{name}: RSS MB after the runs {mb}{hits}"

            scenarios.append(Scenario(name, f"http://127.0.0.1:{sup.cfg.listener.port}{path_of(body)}", script,
                                      [p.pid for p in children] + [fake.pid], sup.stop, rss,
                                      {c.proc.pid: process_kind(c.name) for c in sup.children if c.proc}))  # fmt: skip
        if {"litellm", "litellm-translated"} & only:
            scenarios += litellm_scenarios(work, fport, [fake.pid], only)
        if {"portkey", "portkey-translated"} & only:
            scenarios += portkey_scenarios(work, fport, [fake.pid], only)
        for s in scenarios:  # the fake upstream's own share, apart from the path under test's
            s.kinds.setdefault(fake.pid, "fake")
        for s in scenarios:
            run_wrk(s.url, s.script, 16, 3)  # warm-up: connections, caches, a steady state (every scenario alike)
        for round_ in range(args.rounds):
            if args.rounds > 1:
                print(f"round {round_ + 1} of {args.rounds}", flush=True)
            k = round_ % len(scenarios)  # each round starts one scenario later: no row always goes first
            for s in scenarios[k:] + scenarios[:k]:
                for c in conns:
                    rows.append(measure(s.name, s.url, s.script, s.pids, c, args.duration, s.kinds) | {"round": round_})
        notes += [s.note() for s in scenarios if s.note]
        if receiver is not None:
            notes += trace_notes(receiver, [s.name for s in scenarios])
    finally:
        for s in reversed(scenarios):
            try:
                s.stop()
            except Exception as exc:  # one stuck process must not keep the others running
                print(f"{s.name}: stop failed: {exc!r}", file=sys.stderr)
        fake.terminate()
        if receiver is not None:
            receiver.stop()
        time.sleep(0.2)
    for line in report(rows, args.rounds) + notes:
        print(line, flush=True)
    if "ttft" in only:  # after the table: a failure here loses none of the rounds
        for line in ttft_notes(work, config, env, key):
            print(line)
    if args.keep:  # a run that failed keeps its directory anyway: its logs say why
        print(f"run directory kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
