"""The direct lane's adapter: Envoy's access log (gRPC ALS) -> Completion -> the completion hooks.

A direct-lane request has no per-try Python (see sidegate/bootstrap/render.py): Envoy injects the
credential, `json_to_metadata` copies the response's usage into the `sidegate.usage` metadata,
and the access log entry (batched by Envoy, several requests per message) carries the gateway's
metadata, the status, the cluster that answered and the timings. Each entry becomes the same
:class:`Completion` a per-try stream would produce, so the completion hooks (quota true-up, ledger,
metrics, breaker) see both lanes alike.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

from sidegate.core.completion import Completion, CompletionHook, notify, parse_retry_after
from sidegate.core.context import request_meta
from sidegate.core.try_providers import TryProviders
from sidegate.envoy_pb import struct_to_dict
from sidegate.translate.base import Usage
from sidegate.translate.usage import parse_anthropic_usage, parse_openai_usage
from sidegate.trust import Token, require
from sidegate.wire import (
    AUTHZ_NS,
    FRONT_LANE_HEADER,
    LANE_DIRECT,
    LANE_TRY,
    STREAM_NS,
    TRY_NS,
    USAGE_NS,
    TryWire,
    provider_of_cluster,
)

log = logging.getLogger("sidegate.direct")


_EVENT_BYTES = 160


def _seconds(d: Any) -> float:
    return d.seconds + d.nanos / 1e9


def usage_of(fields: dict[str, Any]) -> Usage | None:
    """The `sidegate.usage` metadata (OpenAI chat, Responses or Anthropic field names) -> Usage."""
    if "prompt_tokens" in fields or "completion_tokens" in fields:
        raw: dict[str, Any] = {k: int(fields.get(k, 0)) for k in ("prompt_tokens", "completion_tokens")}
        raw["prompt_tokens_details"] = {"cached_tokens": int(fields.get("cached_tokens", 0))}
        return parse_openai_usage(raw)
    if "cached_tokens" in fields:  # Responses: input_tokens includes input_tokens_details.cached_tokens
        prompt = int(fields.get("input_tokens", 0))
        cached = min(int(fields["cached_tokens"]), prompt)
        return Usage(input_tokens=prompt, output_tokens=int(fields.get("output_tokens", 0)), cached_tokens=cached)
    if "input_tokens" in fields or "output_tokens" in fields:
        keys = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
        return parse_anthropic_usage({k: int(fields.get(k, 0)) for k in keys})
    return None


def completion(entry: accesslog_pb2.HTTPAccessLogEntry, now: float | None = None) -> Completion | None:
    """One finished direct-lane request -> the Completion the completion hooks expect (None: not ours)."""
    common = entry.common_properties
    fm = common.metadata.filter_metadata
    meta = request_meta(fm)
    if meta is None or meta.get("lane") != LANE_DIRECT:
        return None
    usage_fields = struct_to_dict(fm[USAGE_NS]) if USAGE_NS in fm else {}
    status = entry.response.response_code.value
    usage = usage_of(usage_fields) if 200 <= status < 300 else None
    flags = common.response_flags
    streamed = bool(meta.get("stream"))
    watch = struct_to_dict(fm[STREAM_NS]) if streamed and STREAM_NS in fm else {}
    # The stream watch (sidegate/bootstrap/stream.py) relayed a terminal event (the provider's, or its
    # own error event): the client hanging up right after it, before Envoy saw the provider's end
    # of body, is no abort (that race marked ~1 in 4 fully read streams aborted).
    ended = watch.get("end")
    aborted = not ended and (status == 0 or flags.downstream_connection_termination)
    if streamed and not ended and 200 <= status < 300:
        # A stream cut by a reset (the provider's or the client's) or a timeout: no terminal event.
        # (An HTTP/1.1 provider's reset mid-body shows as upstream_protocol_error, verified on 1.40.)
        aborted = aborted or any((flags.upstream_remote_reset, flags.upstream_connection_termination,
                                  flags.upstream_protocol_error, flags.downstream_remote_reset, flags.local_reset,
                                  flags.stream_idle_timeout, flags.upstream_request_timeout))  # fmt: skip
    now = time.monotonic() if now is None else now
    total = _seconds(common.time_to_last_downstream_tx_byte) or _seconds(common.duration)
    started = now - total
    ttfb = _seconds(common.time_to_first_upstream_rx_byte)
    first_us = watch.get("first_us")
    if first_us:
        # The stream's first body chunk (its headers may come well before any token), from the
        # start of the final try (its first byte sent upstream), as the full lane measures it.
        try_start = common.start_time.ToNanoseconds() / 1e9 + _seconds(common.time_to_first_upstream_tx_byte)
        ttfb = max(int(first_us) / 1e6 - try_start, 0.0) or ttfb
    retry_after = parse_retry_after(dict(entry.response.response_headers)) if status >= 400 else None
    # A stream without the provider's usage event (the client left, or the stream broke): estimate
    # the streamed tokens from the bytes sent (~one token per event of ~160 bytes), as the full
    # lane counts chunks. A stream with a first chunk counts at least one (its TTFT is kept).
    chunks = 0
    if streamed and 200 <= status < 300:
        body_bytes = entry.response.response_body_bytes
        chunks = body_bytes // _EVENT_BYTES if usage is None and (aborted or ended != "complete") else 0
        if first_us or body_bytes:
            chunks = max(chunks, 1)
    return Completion(
        meta=meta, provider=provider_of_cluster(common.upstream_cluster) or "none",
        upstream_model=str(usage_fields.get("model") or meta.get("model", "")), status=status, usage=usage,
        final=True, streamed=streamed, aborted=bool(aborted), chunks=chunks, attempt=common.upstream_request_attempt_count or 1,
        started_at=started, first_byte_at=started + ttfb if ttfb else now, ended_at=now, retry_after_s=retry_after,
    )  # fmt: skip


class AccessLogAdapter(als_pb2_grpc.AccessLogServiceServicer):
    """The gRPC AccessLogService Envoy streams direct-lane log entries to."""

    def __init__(self, completion_hooks: list[CompletionHook], token: Token, abandon: Callable[[str], None] | None = None,
                 providers: TryProviders | None = None):  # fmt: skip
        self.completion_hooks = completion_hooks
        self.providers = providers
        """The per-try stage's providers (live routing): an entry of a provider or routing version
        this process does not know yet waits for it to load before the completion hooks see it."""
        self.token = token
        """The internal token: a made-up log entry would be metered, or settle someone's try."""
        self.abandon = abandon
        """The try lane's (HTTP front): its entries are requests whose last try got no response."""
        self._streams: set[asyncio.Task[Any]] = set()
        self._late: set[asyncio.Task[None]] = set()

    def close(self) -> None:
        """End the log streams (Envoy keeps them open forever; a graceful stop would wait on them)."""
        for task in self._streams:
            task.cancel()

    def on_entry(self, entry: accesslog_pb2.HTTPAccessLogEntry) -> None:
        if self.abandon is not None:
            fm = entry.common_properties.metadata.filter_metadata
            front = fm.get(AUTHZ_NS)
            lane = front.fields.get(FRONT_LANE_HEADER) if front is not None else None
            if lane is not None and lane.string_value == LANE_TRY:
                # The key the Lua kept for the last try, or the one of a prepared try it never saw.
                state = fm.get(TRY_NS)
                key = state.fields.get("id") if state is not None else front.fields.get(TryWire.KEY)
                if key is not None:
                    self.abandon(key.string_value)
                return
        done = completion(entry)
        if done is None:
            return
        providers = self.providers
        if providers is not None and not providers.ready(done.meta, entry.common_properties.upstream_cluster):
            task = asyncio.get_running_loop().create_task(self._later(providers, done))
            self._late.add(task)  # never cancelled: the load is bounded (live.LOAD_TIMEOUT_S), the entry is then notified
            task.add_done_callback(self._late.discard)
            return
        notify(self.completion_hooks, done)

    async def _later(self, providers: TryProviders, done: Completion) -> None:
        try:
            await providers.learn(done.meta)
        finally:  # loaded or not: the entry is metered
            notify(self.completion_hooks, done)

    async def StreamAccessLogs(
        self, request_iterator: AsyncIterator[als_pb2.StreamAccessLogsMessage], context: grpc.aio.ServicerContext
    ) -> als_pb2.StreamAccessLogsResponse:
        await require(self.token, context)
        task = asyncio.current_task()
        if task is not None:
            self._streams.add(task)
        try:
            async for msg in request_iterator:
                for entry in msg.http_logs.log_entry:
                    try:
                        self.on_entry(entry)
                    except Exception:
                        log.exception("direct-lane log entry failed")
                    # A batch holds ~50 ms of requests: let requests waiting on this loop (the
                    # gateway's answers) run between entries instead of after the whole batch.
                    await asyncio.sleep(0)
        finally:
            if task is not None:
                self._streams.discard(task)
        return als_pb2.StreamAccessLogsResponse()
