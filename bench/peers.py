"""Portkey's open-source gateway as a benchmark peer, on the same fake upstream as Sidegate.

Portkey (npm `@portkey-ai/gateway`, MIT) is a Node/Hono gateway without auth, quota or cache in its
open-source build; it routes each request by its headers: `x-portkey-provider` names the provider
(`openai`, `anthropic`) and `x-portkey-custom-host` replaces the provider's base URL (it then adds
the provider's own path: `/chat/completions` for OpenAI, `/messages` for Anthropic, so the host is
given with `/v1`). The client's `Authorization: Bearer` key goes to the provider (as `x-api-key`
for Anthropic). One Node process (the event loop is one thread), as LiteLLM runs one worker.

Installing it is a bench-time step, never a test-time one: PORTKEY_BIN (its `start-server.js`, or
an executable) if set, else the pinned version under the bench cache, installed from the
configured npm registry with `npm install --ignore-scripts` the first time it is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.measure import check_chat_completion, wrk_script
from bench.scenarios import CHAT, Scenario
from sidegate.ports import free_port, wait_for_port

PORTKEY_PACKAGE = "@portkey-ai/gateway"
PORTKEY_VERSION = "1.15.2"
"""Pinned: the version measured in docs/performance.md (issue 25)."""
PEERS_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sidegate" / "bench-peers"
"""Where the bench installs peers it fetches from a package registry (one directory per peer)."""


def portkey_entry(cache: Path = PEERS_DIR) -> list[str] | None:
    """The command that starts Portkey (without its port), installing the pinned version into
    `cache` first if it is missing; None (row skipped, said on stderr) without node or npm."""
    given = os.environ.get("PORTKEY_BIN")
    node = shutil.which("node")
    if given:
        return [node or "node", given] if given.endswith(".js") else [given]
    prefix = cache / f"portkey-{PORTKEY_VERSION}"
    script = prefix / "node_modules" / PORTKEY_PACKAGE / "build" / "start-server.js"
    if not script.exists():
        npm = shutil.which("npm")
        if not (node and npm):
            print("portkey: node/npm not found (or set PORTKEY_BIN); row skipped", file=sys.stderr)
            return None
        prefix.mkdir(parents=True, exist_ok=True)
        print(
            f"portkey: installing {PORTKEY_PACKAGE}@{PORTKEY_VERSION} into {prefix} (npm registry)",
            file=sys.stderr,
        )
        # --ignore-scripts: its only install script (patch-package) has no patches in the package.
        done = subprocess.run(
            [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--ignore-scripts",
             f"{PORTKEY_PACKAGE}@{PORTKEY_VERSION}"], capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if done.returncode or not script.exists():
            print(
                f"portkey: npm install failed ({done.returncode}): {done.stderr[-500:]}; row skipped",
                file=sys.stderr,
            )
            return None
    if not node:
        print("portkey: node not found; row skipped", file=sys.stderr)
        return None
    return [node, str(script)]


def portkey_headers(fport: int, provider: str) -> dict[str, str]:
    """Portkey's routing headers for the fake upstream at `fport` as `provider`."""
    return {"x-portkey-provider": provider, "x-portkey-custom-host": f"http://127.0.0.1:{fport}/v1"}


PORTKEY_ROWS = (("portkey", "openai", CHAT),
                ("portkey-translated", "anthropic", CHAT.replace(b'"gpt-4o-mini"', b'"claude-3-5-haiku-20241022"')))  # fmt: skip
"""(scenario, provider, body): an OpenAI client on an OpenAI provider; the same client on an
Anthropic provider, Portkey translating both ways (the full pipeline's job)."""


def portkey_scenarios(work: Path, fport: int, pids: list[int], names: set[str]) -> list[Scenario]:
    """Portkey (one Node process) on the fake upstream at `fport`: `portkey` (OpenAI provider) and
    `portkey-translated` (Anthropic provider), those of `names`; each checked with one request."""
    entry = portkey_entry()
    if entry is None:
        return []
    port = free_port()
    log = (work / "portkey.log").open("wb")  # it prints only errors after its banner
    proc = subprocess.Popen(
        [*entry, f"--port={port}", "--headless"], stdout=log, stderr=subprocess.STDOUT, cwd=work
    )

    def stop() -> None:
        proc.terminate()
        proc.wait(10)
        log.close()

    try:
        wait_for_port("127.0.0.1", port, 60, proc)
    except BaseException:
        stop()
        raise
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    out: list[Scenario] = []
    for name, provider, body in PORTKEY_ROWS:
        if name not in names:
            continue
        headers = portkey_headers(fport, provider)
        for _ in range(20):  # its banner animation delays the first answers by ~1 s
            problem = check_chat_completion(url, body, headers | {"authorization": "Bearer sk-bench"})
            if problem is None:
                break
            time.sleep(0.25)
        if problem is not None:
            print(f"{name}: no proper chat.completion from Portkey ({problem}); row skipped", file=sys.stderr)
            continue
        script = work / f"{name}.lua"
        wrk_script(script, body, "sk-bench", extra=headers)
        out.append(Scenario(name, url, script, [proc.pid, *pids], lambda: None, kinds={proc.pid: "portkey"}))
    if out:  # the process stops with the last of its scenarios (they are stopped in reverse order)
        out[0].stop = stop
    else:
        stop()
    return out
