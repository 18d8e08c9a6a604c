"""Measuring one scenario: the wrk script and run, the CPU its processes used (from /proc), their
memory, and the streaming time to first event with a Python client."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path

from bench import upstream

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


def wrk_script(path: Path, body: bytes, key: str | None, vary: bool = False, extra: dict[str, str] | None = None) -> None:
    """A wrk script posting `body`; with `vary`, each request's last question differs (see _VARY);
    `extra`: more request headers (a peer's routing headers, e.g. Portkey's)."""
    headers = 'wrk.headers["Content-Type"] = "application/json"\n'
    headers += "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in (extra or {}).items())
    if b'"stream":true' in body:  # the fast fake answers it as a stream
        headers += f'wrk.headers["{upstream.STREAM_HEADER}"] = "1"\n'
        if b"(500 events)" in body:  # bench/scenarios.py: STREAM500
            headers += f'wrk.headers["{upstream.LONG_HEADER}"] = "1"\n'
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


def _proc_table() -> dict[int, tuple[int, int]]:
    """Every live process: pid -> (parent pid, CPU ticks user + system)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            out[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
        except (OSError, IndexError, ValueError):
            pass  # gone meanwhile
    return out


def cpu_by_kind(kinds: dict[int, str]) -> dict[str, float]:
    """CPU seconds used so far per process kind (`kinds`: pid -> "envoy", "extproc", "store", ...;
    two pids of one kind, e.g. extproc workers, add up). A process's live descendants count with
    it: a peer or a store that forks a worker keeps its CPU in the kind that started it."""
    if not kinds:
        return {}
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out: dict[str, float] = dict.fromkeys(kinds.values(), 0.0)
    for root, kind in kinds.items():
        todo, seen = [root], set()
        while todo:
            pid = todo.pop()
            if pid in seen or pid not in table:
                continue
            seen.add(pid)
            out[kind] += table[pid][1] / TICK
            todo += [c for c in children.get(pid, ()) if c not in kinds]  # a listed pid counts as its own kind
    return out


def process_kind(child_name: str) -> str:
    """A supervisor child's name -> its kind in the CPU split: extproc workers (`extproc-1`) are
    extproc, the embedded Valkey is the store."""
    base = child_name.split("-", 1)[0]
    return {"valkey": "store"}.get(base, base)


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


def measure(name: str, url: str, script: Path, pids: list[int], conns: int, duration: int,
            kinds: dict[int, str] | None = None) -> dict:
    """One wrk run; `cpu_ms` is the CPU per request of all `pids`, and `cpu_by_kind` splits it per
    process kind (`kinds`: pid -> kind, see cpu_by_kind)."""
    kinds = kinds or {}
    before, before_kinds = cpu_seconds(pids), cpu_by_kind(kinds)
    r = run_wrk(url, script, conns, duration)
    used = cpu_seconds(pids) - before
    after_kinds = cpu_by_kind(kinds)
    per_req = (1e3 / r["requests"]) if r["requests"] else float("nan")
    r.update(name=name, conns=conns, cpu_ms=used * per_req,
             cpu_by_kind={k: (after_kinds[k] - before_kinds.get(k, 0.0)) * per_req for k in after_kinds})  # fmt: skip
    print(f"  {name:<9} c={conns:<3} p50={r['p50']:.3f}ms p99={r['p99']:.3f}ms rps={r['rps']:.0f} "
          f"non2xx={r['errors']:.0f} cpu/req={r['cpu_ms']:.3f}ms "
          + " ".join(f"{k}={v:.3f}" for k, v in r["cpu_by_kind"].items()), flush=True)  # fmt: skip
    return r


def check_chat_completion(url: str, body: bytes, headers: dict[str, str]) -> str | None:
    """One request before the rounds: None if the answer is a proper chat.completion carrying the
    fake's text and usage, else what is wrong (a peer answering errors fast would flatter it)."""
    req = urllib.request.Request(url, data=body, headers={"content-type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            answer = json.loads(r.read())
    except Exception as exc:  # the bench reports it and skips the row
        return repr(exc)
    try:
        ok = (answer["object"] == "chat.completion"
              and answer["choices"][0]["message"]["content"] == "Paris is the capital of France."
              and answer["usage"]["total_tokens"] == 21)  # fmt: skip
    except (KeyError, IndexError, TypeError):
        ok = False
    return None if ok else f"unexpected answer {str(answer)[:300]}"


def rss_mb(pid: int) -> float:
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
