"""What the same-API stream pairs (the passthroughs) share: the provider's events are relayed as
its bytes, whole events only, so a stream cut mid-event can still be closed with a clean terminal
error event in the client's own format."""

from __future__ import annotations

from sidegate.sse import SseParser
from sidegate.translate.base import Usage
from sidegate.translate.common import STREAM_TRUNCATED

__all__ = ["PassthroughStream"]


class PassthroughStream:
    """The state every passthrough stream keeps and its end; ``feed`` (which events end the stream,
    where usage is read) and ``_error_event`` (the API's terminal error) are each API's own."""

    __slots__ = ("_done", "_parser", "usage")

    def __init__(self) -> None:
        self._parser = SseParser()
        self._done = False
        self.usage: Usage | None = None

    @property
    def done(self) -> bool:
        """The terminal event (the provider's, or an error event) has been emitted."""
        return self._done

    def finish(self) -> bytes:
        if self._done:
            return b""
        self._done = True
        return self._error_event(STREAM_TRUNCATED)

    def _error_event(self, message: str) -> bytes:
        raise NotImplementedError
