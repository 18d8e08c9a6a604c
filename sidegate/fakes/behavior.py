"""Scripted behaviours: what the fake does for one request (error, delay, hang, reset, custom answer)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["INFERENCE_PATHS", "Behavior", "Script"]

#: Gemini's inference methods (`/v1beta/models/M:generateContent`...; countTokens is none, as Anthropic's).
GEMINI_INFERENCE_SUFFIXES = (
    ":generateContent",
    ":streamGenerateContent",
    ":embedContent",
    ":batchEmbedContents",
)

#: Paths that scripts without an explicit `path` apply to (Azure deployments are matched by prefix).
INFERENCE_PATHS = (
    "/v1/chat/completions",
    "/v1/messages",
    "/v1/embeddings",
    "/v1/responses",
    "/openai/v1/responses",
    "/openai/responses",
)


@dataclass
class Behavior:
    """One scripted behaviour. Every field is optional; the empty behaviour is a normal answer.

    Matching: `path` (prefix of the request path; without it only inference POSTs match) and
    `model` (exact request model). `times` is how many matching requests consume it (-1: forever).
    """

    path: str | None = None
    model: str | None = None
    times: int = 1
    # Errors: body in the schema's format; `error` is the message or {"type","message","code","param"}.
    status: int = 200
    error: str | dict[str, Any] | None = None
    retry_after: float | str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # Transport faults.
    delay_s: float = 0.0  # before response headers
    hang: bool = False  # never answer (until the client goes away or hang_max_s)
    hang_max_s: float = 300.0
    reset: bool = False  # RST before any byte (or after `reset_after_chunks` stream events)
    reset_after_chunks: int | None = None
    garbage: bool = False  # 200 with an invalid JSON body (or a garbage SSE line when streaming)
    empty: bool = False  # the status (and headers) with no body at all (content-length: 0)
    stall_after_chunks: int | None = None  # stream N events, then send nothing (as `hang`), then RST
    truncate: bool | int = False  # stream stops after N events (True: half) without the terminal event
    stream_error: dict[str, Any] | None = None  # {"after": N, "type": ..., "message": ...} mid-stream
    # {"after": N, "data": "<payload>"}: a `data: <payload>` event after N events, then the rest of
    # the stream as usual (a provider that sends one broken event and goes on).
    bad_event: dict[str, Any] | None = None
    write_size: int | None = None  # a stream's bytes written in pieces of this size (events cut anywhere)
    linger_s: float = 0.0  # a stream's body ends this long after its last event (a slow provider close)
    # Answer shape.
    content: str | None = None
    tool_calls: list[dict[str, Any]] | str | None = None  # [{"name","arguments"}] or "auto"
    finish_reason: str | None = None  # OpenAI or Anthropic spelling, mapped per schema
    chunks: int | None = None
    chunk_delay_s: float | None = None
    usage: dict[str, int] | None = None  # prompt/completion or input/output token counts
    response_model: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Behavior:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown behaviour fields: {sorted(unknown)}")
        b = cls(**data)
        if b.reset_after_chunks is not None:
            b.reset = True
        return b

    def matches(self, path: str, model: str | None) -> bool:
        if self.path is not None:
            if not path.startswith(self.path):
                return False
        elif not (
            path in INFERENCE_PATHS
            or path.startswith("/openai/deployments/")
            or path.endswith(GEMINI_INFERENCE_SUFFIXES)
        ):
            return False
        return self.model is None or self.model == model


class Script:
    """A thread-safe queue of behaviours plus a default; `take()` consumes the first match."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[Behavior] = []
        self.default: Behavior | None = None

    def push(self, items: list[dict[str, Any] | Behavior]) -> None:
        parsed = [b if isinstance(b, Behavior) else Behavior.from_dict(b) for b in items]
        with self._lock:
            self._queue.extend(parsed)

    def set_default(self, item: dict[str, Any] | Behavior | None) -> None:
        self.default = Behavior.from_dict(item) if isinstance(item, dict) else item

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()
        self.default = None

    def pending(self) -> list[Behavior]:
        with self._lock:
            return list(self._queue)

    def take(self, path: str, model: str | None) -> Behavior | None:
        if self._queue:
            with self._lock:
                for i, b in enumerate(self._queue):
                    if b.matches(path, model):
                        if b.times > 0:
                            b.times -= 1
                            if b.times == 0:
                                del self._queue[i]
                        return b
        d = self.default
        if d is not None and d.matches(path, model):
            return d
        return None
