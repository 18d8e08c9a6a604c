"""Fault matrix, process rows: extproc or authz killed (kill -9) under `services.failure_mode_allow`
false (the default) and true. Envoy must answer at once in the client's API format, never hang and
never let an unauthenticated request through; `Supervisor.check()` (what `sidegate up` runs every
0.2 s) restarts the process and the next request works."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from fault_helpers import body_for, error_message, first_ok, kill, oai, post, supervise_until_up
from harness import FRONT_SERVICES, Stack

pytestmark = pytest.mark.e2e
APIS = [("openai", "gpt-4o-mini"), ("anthropic", "claude-haiku")]
DOWN = "The Sidegate gateway service is unavailable."


def _stack(request, tmp_path_factory, fake_openai, fake_anthropic, services: dict) -> Iterator[Stack]:
    extra = {"services": {"failure_mode_allow": request.param, **services}, "defaults": {"guard": None}}
    s = Stack(tmp_path_factory.mktemp("proc"), fake_openai.url, fake_anthropic.url, extra=extra)
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module", params=[False, True], ids=["fail-closed", "fail-open"])
def stack(request, tmp_path_factory, fake_openai, fake_anthropic) -> Iterator[Stack]:
    yield from _stack(request, tmp_path_factory, fake_openai, fake_anthropic, {})


@pytest.fixture(scope="module", params=[False, True], ids=["fail-closed", "fail-open"])
def authz_stack(request, tmp_path_factory, fake_openai, fake_anthropic) -> Iterator[Stack]:
    """The separate authz process exists only with `auth: ext_authz` (the gRPC front's shape)."""
    yield from _stack(request, tmp_path_factory, fake_openai, fake_anthropic, dict(FRONT_SERVICES["ext_proc"]))


def allow(stack: Stack) -> bool:
    assert stack.sup is not None
    return stack.sup.cfg.services.failure_mode_allow


def _down_answers(stack: Stack) -> list[tuple[str, httpx.Response, float]]:
    out = []
    for api, model in APIS:
        t = time.monotonic()
        r = post(stack, api, body_for(api, model), timeout=5)
        out.append((api, r, time.monotonic() - t))
    return out


def _restarted(stack: Stack, name: str) -> None:
    supervise_until_up(stack, name)
    for api, model in APIS:
        r = first_ok(stack, api, model, timeout=5)
        assert r.status_code == 200, (api, r.status_code, r.text[:200])


@pytest.mark.alone  # bounds a duration
def test_extproc_killed(stack, fake_openai):
    kill(stack, "extproc")
    try:
        for api, r, took in _down_answers(stack):
            assert took < 2.0
            # Either mode: 503 with the same message (fail-closed: ext_proc's error answer;
            # fail-open: the route a request without the gateway's route header reaches).
            assert r.status_code == 503, (api, r.status_code, r.text[:200])
            assert error_message(api, r) == DOWN, (api, r.text[:200])
    finally:
        _restarted(stack, "extproc")
    assert fake_openai.requests  # the restarted extproc served the first_ok requests


def test_gateway_down_a_client_route_header_routes_nowhere(stack, fake_openai, fake_anthropic):
    """The route header is the gateway's: with the gateway down (and fail-open letting the request
    on), a client that sends its own `x-sidegate-route` for a real route, direct lane included,
    gets the gateway's 503, never the provider (routes match the value in the gateway's metadata)."""
    kill(stack, "extproc")
    try:
        for api, model in APIS:
            for route in (model, f"{model}~direct", f"{model}~try", "~replay.0.x"):
                r = post(stack, api, body_for(api, model), timeout=5, headers={"x-sidegate-route": route})
                assert 500 <= r.status_code <= 599, (api, route, r.status_code, r.text[:200])
                assert error_message(api, r) is not None
        assert fake_openai.requests == [] and fake_anthropic.requests == []
    finally:
        _restarted(stack, "extproc")


@pytest.mark.alone  # bounds a duration
def test_authz_killed(authz_stack, fake_openai):
    kill(authz_stack, "authz")
    try:
        for api, r, took in _down_answers(authz_stack):
            assert took < 2.0
            if allow(authz_stack):
                # Fail-open skips ext_authz, but the gateway still requires a tenant: never unauthenticated.
                assert r.status_code == 401, (api, r.status_code, r.text[:200])
            else:
                assert r.status_code == 503, (api, r.status_code, r.text[:200])
                assert error_message(api, r) == DOWN, (api, r.text[:200])
            assert error_message(api, r) is not None
        assert fake_openai.requests == []
    finally:
        _restarted(authz_stack, "authz")


@pytest.mark.alone  # bounds a duration
def test_stream_in_flight_when_extproc_dies_ends(stack, fake_openai):
    """The per-try ext_proc stream of a running SSE response loses its server: the client's stream
    must end (error or truncated), not hang; then the restarted extproc serves again."""
    fake_openai.script([{"chunks": 40, "chunk_delay_s": 0.1}])
    stream = oai(stack, timeout=10).chat.completions.create(**body_for("openai", "gpt-4o-mini"), stream=True)
    got = 0
    failed = False
    start = time.monotonic()
    try:
        for _ in stream:
            got += 1
            if got == 1:
                kill(stack, "extproc")  # mid-stream, once the first chunk has arrived
    except (openai.APIError, httpx.HTTPError):
        failed = True
    finally:
        took = time.monotonic() - start
        _restarted(stack, "extproc")
    assert took < 5.0, (got, took)
    assert failed or got < 41, (got, took)  # ended early: an error, or a truncated stream
