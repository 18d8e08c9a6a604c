"""`ServerThread`: a fake server with async ``start()``/``stop()`` on its own event loop thread, for
synchronous tests; `FakeProviderThread` is the one for a `FakeProvider` (`OtlpReceiverThread` in
otlp.py the one for the OTLP receiver)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Protocol, Self

from sidegate.fakes.server import FakeProvider
from sidegate.fakes.validation import warm_up

__all__ = ["FakeProviderThread", "ServerThread"]


class _Server(Protocol):
    async def start(self) -> Any: ...

    async def stop(self) -> Any: ...


class ServerThread:
    """Runs `server` (anything with async ``start()``/``stop()``) in a daemon thread on its own event
    loop; ``with`` (or start()/stop()). Attribute reads the wrapper lacks are forwarded to the server,
    so tests use the wrapper as they would the server. `what` names the thread and the errors."""

    def __init__(self, server: _Server, what: str) -> None:
        self._server = server
        self._what = what
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def _new_loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.new_event_loop()

    def start(self, timeout: float = 10.0) -> Self:
        self._loop = self._new_loop()
        name = f"{self._what.replace(' ', '-').lower()}-{id(self):x}"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"{self._what} did not start")
        if self._error is not None:
            raise RuntimeError(f"{self._what} failed to start") from self._error
        return self

    def _run(self) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._server.start())
        except BaseException as e:
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._server.stop())
            self._loop.close()

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is None or self._thread is None:
            return
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
        self._thread = None
        self._loop = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __getattr__(self, name: str) -> Any:
        if name == "_server":  # not set yet (a half-built wrapper): no recursion through __getattr__
            raise AttributeError(name)
        return getattr(self._server, name)


class FakeProviderThread(ServerThread):
    """Runs a `FakeProvider` in a daemon thread. Takes the same arguments as `FakeProvider`.

    ``with FakeProviderThread() as fp: ... fp.url`` (or start()/stop()). The provider's control
    methods (`script`, `set_default`, `requests`, `reset`) are thread-safe and forwarded here.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.provider = FakeProvider(*args, **kwargs)
        super().__init__(self.provider, "fake provider")

    def _new_loop(self) -> asyncio.AbstractEventLoop:
        try:
            import uvloop

            return uvloop.new_event_loop()
        except ImportError:  # pragma: no cover - uvloop is a dependency, but the fakes work without it
            return asyncio.new_event_loop()

    def start(self, timeout: float = 10.0) -> Self:
        # The SDK request types load here, once per process and outside `timeout`: on a busy machine
        # the imports alone can take longer than a server start may.
        warm_up()
        return super().start(timeout)
