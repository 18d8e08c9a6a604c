"""e2e fixtures: one real stack (Envoy + authz + extproc + Valkey) per module, two fake providers
(a third on demand), an OTLP receiver on demand."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gemini_helpers import gemini_fake
from harness import Stack

from sidegate.fakes import FakeProviderThread
from sidegate.fakes.otlp import OtlpReceiverThread


@pytest.fixture(scope="session")
def fake_openai() -> Iterator[FakeProviderThread]:
    fp = FakeProviderThread(port=0)
    fp.start()
    yield fp
    fp.stop()


@pytest.fixture(scope="session")
def fake_anthropic() -> Iterator[FakeProviderThread]:
    fp = FakeProviderThread(port=0)
    fp.start()
    yield fp
    fp.stop()


@pytest.fixture(scope="module")
def fake_gemini() -> Iterator[FakeProviderThread]:
    """The Gemini fake (key ``gemini_helpers.GEMINI_KEY``), one per module that asks for it."""
    yield from gemini_fake()


@pytest.fixture(autouse=True)
def _clean_fakes(
    request: pytest.FixtureRequest, fake_openai: FakeProviderThread, fake_anthropic: FakeProviderThread
) -> Iterator[None]:
    for fp in (fake_openai, fake_anthropic):
        fp.reset()
    if "fake_gemini" in request.fixturenames:  # a test whose stack (or itself) uses the Gemini fake
        request.getfixturevalue("fake_gemini").reset()
    if "receiver" in request.fixturenames:  # a traced stack (or the test) exports spans to it
        request.getfixturevalue("receiver").reset()
    yield


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiverThread]:
    """An OTLP receiver (tests/trace_helpers.py), one per module that asks for it; emptied before each test."""
    with OtlpReceiverThread() as r:
        yield r


@pytest.fixture(scope="module")
def stack(tmp_path_factory, fake_openai, fake_anthropic, request) -> Iterator[Stack]:
    extra = getattr(request.module, "STACK_EXTRA", {})
    s = Stack(tmp_path_factory.mktemp("stack"), fake_openai.url, fake_anthropic.url, extra=extra)
    s.start()
    yield s
    s.stop()
