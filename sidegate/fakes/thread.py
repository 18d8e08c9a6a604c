"""`FakeProviderThread`: a `FakeProvider` on its own event loop thread, for synchronous tests."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from sidegate.fakes.server import FakeProvider
from sidegate.fakes.validation import warm_up

__all__ = ["FakeProviderThread"]


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is a dependency, but the fakes work without it
        return asyncio.new_event_loop()


class FakeProviderThread:
    """Runs a `FakeProvider` in a daemon thread. Takes the same arguments as `FakeProvider`.

    ``with FakeProviderThread() as fp: ... fp.url`` (or start()/stop()). The provider's control
    methods (`script`, `set_default`, `requests`, `reset`) are thread-safe and forwarded here.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.provider = FakeProvider(*args, **kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self, timeout: float = 10.0) -> FakeProviderThread:
        # The SDK request types load here, once per process and outside `timeout`: on a busy machine
        # the imports alone can take longer than a server start may.
        warm_up()
        self._loop = _new_loop()
        self._thread = threading.Thread(target=self._run, name=f"fake-provider-{id(self):x}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("fake provider did not start")
        if self._error is not None:
            raise RuntimeError("fake provider failed to start") from self._error
        return self

    def _run(self) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.provider.start())
        except BaseException as e:
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self.provider.stop())
            self._loop.close()

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is None or self._thread is None:
            return
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
        self._thread = None
        self._loop = None

    def __enter__(self) -> FakeProviderThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __getattr__(self, name: str) -> Any:
        # url, port, requests, script, set_default, reset, clear_requests, log, pending_script, ...
        return getattr(self.provider, name)
