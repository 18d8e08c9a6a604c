"""Fake OpenAI (chat and Responses) / Azure OpenAI / Anthropic / Gemini (and Vertex AI's Gemini)
providers speaking the real wire formats and refusing what the official SDKs' request types refuse
(tests, bench, demo; docs/fakes.md).

In-process: ``async with FakeProvider(port=0) as fp: ... fp.url``; from sync code:
``FakeProviderThread().start()``; as a process: ``python -m sidegate.fakes --port N``.
"""

from sidegate.fakes.behavior import Behavior
from sidegate.fakes.recording import RecordedRequest
from sidegate.fakes.server import DEFAULT_MODELS, FakeProvider
from sidegate.fakes.text import approx_tokens
from sidegate.fakes.thread import FakeProviderThread

__all__ = [
    "DEFAULT_MODELS",
    "Behavior",
    "FakeProvider",
    "FakeProviderThread",
    "RecordedRequest",
    "approx_tokens",
]
