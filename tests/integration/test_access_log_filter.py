"""The access log's filter (`accesslog.direct_log_filter`, native metadata filters) in a real Envoy:
which finished requests it hands the completion hooks, for every state the gateway's metadata can be in.
The expected answers are the rule it replaced (a CEL expression): a direct-lane request; with the
HTTP front also a try-lane request whose last try has no response (`done` false), or whose
prepared try never reached the Lua (no try state, but a try key from the front)."""

from __future__ import annotations

import itertools
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import yaml

from sidegate import wire
from sidegate.bootstrap import accesslog
from sidegate.ports import free_port, wait_for_port
from sidegate.supervisor import envoy_binary

# Sets the metadata a case describes, as the front, the gateway and the try lane's Lua would.
_LUA = f"""
function envoy_on_request(h)
  local md, hd = h:streamInfo():dynamicMetadata(), h:headers()
  if hd:get("x-lane") ~= nil then md:set("{wire.AUTHZ_NS}", "{wire.FRONT_LANE_HEADER}", hd:get("x-lane")) end
  if hd:get("x-key") ~= nil then md:set("{wire.AUTHZ_NS}", "{wire.TryWire.KEY}", "w0.k1") end
  if hd:get("x-tries") ~= nil then md:set("{wire.TRY_NS}", "tries", 1) end
  if hd:get("x-done") ~= nil then md:set("{wire.TRY_NS}", "done", hd:get("x-done") == "true") end
  if hd:get("x-gw-lane") ~= nil then md:set("{wire.META_NS}", "lane", hd:get("x-gw-lane")) end
end
"""


def _envoy(tmp_path: Path, front: str) -> tuple[subprocess.Popen[bytes], int, Path]:
    port, log = free_port(), tmp_path / f"{front}.log"
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "t",
        "access_log": [{"name": "f", "filter": accesslog.direct_log_filter(SimpleNamespace(front=front)), "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog", "path": str(log),
            "log_format": {"text_format_source": {"inline_string": "%REQ(x-case)%\n"}}}}],
        "route_config": {"virtual_hosts": [{"name": "t", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "direct_response": {"status": 200}}]}]},
        "http_filters": [
            {"name": "set", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                                             "default_source_code": {"inline_string": _LUA}}},
            {"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
        ],
    }  # fmt: skip
    boot = {"static_resources": {"listeners": [{
        "name": "t", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{"name": "hcm", "typed_config": hcm}]}]}]}}  # fmt: skip
    cfg = tmp_path / f"{front}.yaml"
    cfg.write_text(yaml.safe_dump(boot))
    proc = subprocess.Popen([envoy_binary(), "-c", str(cfg), "--use-dynamic-base-id", "-l", "error",
                             "--file-flush-interval-msec", "20"])  # fmt: skip
    wait_for_port("127.0.0.1", port, 15, proc)
    return proc, port, log


def _logged(port: int, log: Path, cases: dict[str, dict[str, str]]) -> set[str]:
    with httpx.Client() as client:
        for name, headers in cases.items():
            assert client.get(f"http://127.0.0.1:{port}/", headers={"x-case": name, **headers}).status_code == 200
    deadline, seen = time.monotonic() + 5, -1
    while time.monotonic() < deadline:  # until the file stops growing
        time.sleep(0.3)
        lines = log.read_text().split() if log.exists() else []
        if len(lines) == seen:
            break
        seen = len(lines)
    return set(lines)


@pytest.mark.parametrize("front", ["http", "ext_proc"])
def test_the_log_carries_exactly_what_the_observers_need(tmp_path, front):
    cases: dict[str, dict[str, str]] = {}
    expected: set[str] = set()
    lanes, keys, states = (None, "direct", "try", "other"), (False, True), (None, "tries", "false", "true")
    for i, (lane, key, state, gw) in enumerate(itertools.product(lanes, keys, states, (None, "direct"))):
        h = {"x-lane": lane, "x-key": "1" if key else None, "x-gw-lane": gw,
             "x-tries": "1" if state else None, "x-done": state if state in ("false", "true") else None}  # fmt: skip
        cases[f"c{i}"] = {k: v for k, v in h.items() if v is not None}
        if front == "http":
            pending = (state == "false") if state else key  # try state ? done == false : a key from the front
            wanted = lane == "direct" or (lane == "try" and pending)
        else:
            wanted = gw is not None  # the gateway ext_proc names the lane
        if wanted:
            expected.add(f"c{i}")
    proc, port, log = _envoy(tmp_path, front)
    try:
        assert _logged(port, log, cases) == expected
    finally:
        proc.terminate()
        proc.wait(10)
