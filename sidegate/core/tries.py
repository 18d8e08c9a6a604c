"""The per-try stage: every provider try of the full lane (the router's upstream ext_proc filter,
adapted by :mod:`extproc.server`) and of the try lane (:mod:`extproc.trylane`) runs through it:
the features' per-try hooks, translation, the credential, header allow-lists, then the answer
back, scrubbed of secrets, and one Completion to the features' completion hooks.

Envoy runs one upstream ext_proc stream per try, so a retry to another provider is translated for
that provider and gets that provider's key.
Header mutations leak from one try into the next (ENVOY_NOTES), so every try sets or removes
every provider-specific header itself.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from sidegate.config import ProviderConfig, RouteConfig, SidegateConfig
from sidegate.core.completion import Completion, CompletionHook, Filler, notify, parse_retry_after
from sidegate.core.feature import Fillers, OnTry, TryHook
from sidegate.core.intake import COMPLETIONS, COUNT_TOKENS, METERED
from sidegate.core.traceparent import CONTENT_KEY
from sidegate.core.try_endpoints import endpoint_translator, estimated_count
from sidegate.core.try_providers import TryProviders
from sidegate.errors import Api, GatewayError, format_error, provider_invalid_response, provider_refused_key
from sidegate.headers import RESPONSE
from sidegate.translate import get_translator
from sidegate.translate.base import StreamTranslator, TranslateOptions, Translator, Usage
from sidegate.translate.codecs.gemini.shapes import retry_delay
from sidegate.wire import PROVIDER_HEADERS, RATE_LIMIT_HEADERS, TOKEN_COUNT_HEADER, provider_of_cluster

log = logging.getLogger("sidegate.upstream")

# PROVIDER_HEADERS are removed on each try, then the ones for this try's provider are set again.
UPSTREAM_PATHS = {Api.OPENAI: "/v1/chat/completions", Api.ANTHROPIC: "/v1/messages", Api.RESPONSES: "/v1/responses"}
"""The provider path of a passthrough try (body unchanged), by API (translated tries take the translator's)."""
VERTEX_ANTHROPIC_VERSION = "vertex-2023-10-16"
"""Anthropic on Vertex AI: the API version its bodies carry (`anthropic_version`; no header)."""
STREAM_TYPES = ("text/event-stream", "application/vnd.amazon.eventstream")
"""Provider answers streamed to the client event by event (SSE; Bedrock's binary event stream)."""
_FIRST_EVENT_PROBES = 8
"""How many leading SSE events of a stream's first chunk are translated one by one, at most, until
one gives client bytes (a translator may hold an event back, e.g. a bare ping)."""
_SPLIT_MIN_REST = 2048
"""A chunk is answered in parts only when this much follows its first event (~15 events, ~0.1 ms of
translation): less would cost the extra ext_proc message (~0.1 ms of CPU) and gain nothing (a
short answer in one read stays one answer)."""


def _event_end(chunk: bytes) -> int:
    """Where the chunk's first SSE event ends (after its blank line), or -1."""
    at = chunk.find(b"\n\n")
    if at >= 0:
        return at + 2
    at = chunk.find(b"\r\n\r\n")
    return at + 4 if at >= 0 else -1


@dataclass(slots=True)
class HeaderChanges:
    set: dict[str, str] = field(default_factory=dict)
    remove: list[str] = field(default_factory=list)


class ProviderTry:
    """One try of one request against one provider."""

    def __init__(self, stage: TryStage, meta: dict[str, Any], cluster: str, attempt: int):
        self.stage = stage
        self.meta = meta
        self.attempt = attempt
        self.inbound = Api(meta.get("api", "openai"))
        self.model = str(meta.get("model", ""))
        provider = provider_of_cluster(cluster)
        cfg = stage.config_for(meta, provider, self.model) if provider is not None else None
        if provider is None or cfg is None or provider not in stage.credentials:
            raise GatewayError(500, "Sidegate: request reached an unknown upstream cluster.")
        mcfg = cfg.models[self.model]
        self.provider_name = provider
        self.provider: ProviderConfig = cfg.providers[provider]
        self.mcfg = mcfg
        self.route: RouteConfig = next(r for r in mcfg.routes if r.provider == provider)
        self.upstream_model = self.route.model or self.model
        self.max_attempts = len(mcfg.groups()) - int(meta.get("start", 0))
        self.retry_on = frozenset(mcfg.retry_on_status)
        self.opts = TranslateOptions(default_max_tokens=mcfg.default_max_tokens,
                                     stream=bool(meta.get("stream")) if self.inbound is Api.GEMINI else None,
                                     anthropic_body_version=VERTEX_ANTHROPIC_VERSION if self.provider.vertex else None)  # fmt: skip
        self.endpoint = str(meta.get("endpoint") or COMPLETIONS)
        self.metered = self.endpoint in METERED
        """A try of an endpoint that spends no tokens (count_tokens) reaches no completion hook."""
        self.same_schema_path: str | None = None
        if self.endpoint == COMPLETIONS:
            # The API this try speaks upstream: the provider's, except a Responses client on an OpenAI
            # provider that serves Responses (passthrough; ProviderConfig.upstream_api).
            self.upstream_api = self.provider.upstream_api(self.inbound)
            self.translator: Translator = get_translator(self.inbound, self.upstream_api)
        else:
            self.upstream_api = self.provider.api
            if self.endpoint == COUNT_TOKENS and self.provider.api is not Api.ANTHROPIC:
                answered = estimated_count(meta)  # a fallback past the Anthropic providers
                if answered is not None:
                    raise answered
            self.translator, self.same_schema_path = endpoint_translator(self.endpoint, provider, self.provider.api)
        self.status = 0
        self.streaming = False
        self.stream_tx: StreamTranslator | None = None
        self.sse_in = False
        """The provider streams SSE (text), not Bedrock's binary event stream: events end in a blank line."""
        self.usage: Usage | None = None
        self.done = False
        self.retried = False
        self.started_at = time.monotonic()
        self.first_byte_at = 0.0
        self.chunks = 0
        self.retry_after_s: float | None = None
        self.late_headers: dict[str, str] | None = None
        """Client response headers known only from a buffered body (set with its status)."""
        # Fills (the cache's, the kept Responses answer): keep the client body and the
        # client-format response, bounded by the largest bound asked; a stream only its last event
        # when that is all every fill asked needs.
        asked = stage.filler.asked(meta) if stage.filler is not None else ()
        self.collect = bool(asked)
        self.collect_limit = max((f.bound(meta) if f.bound else cfg.cache_policy(self.model).max_entry_bytes)
                                 for f in asked) if asked else 0  # fmt: skip
        self.collect_tail = self.collect and all(f.tail for f in asked)
        self.client_body: dict[str, Any] | None = None
        self.collected = bytearray()
        # The features' work inside this try (the guard's redaction and PII restore), usually none.
        self.hooks: tuple[TryHook, ...] = tuple(h for on_try in stage.on_try if (h := on_try(meta, self.inbound)))

    # -- request ------------------------------------------------------------------------------
    @property
    def authority(self) -> str:
        p = self.provider
        return p.host if p.port == (443 if p.tls else 80) else f"{p.host}:{p.port}"

    @property
    def body_unchanged(self) -> bool:
        """The provider takes the client's body as is (same schema, same model name, nothing to
        inject or keep): the request-body round trip is skipped."""
        p = self.provider
        if self.inbound is not self.upstream_api or self.collect or self.upstream_model != self.model or self.meta.get("redact"):
            return False
        if self.meta.get(CONTENT_KEY):  # a content tenant's traced try records the body it sends
            return False
        if p.path_prefix or p.query or p.vertex is not None or self.provider_name in self.stage.signers:
            return False
        if self.inbound is Api.GEMINI:  # the model and the stream flag are in the path: rebuilt per try
            return False
        # An OpenAI stream needs include_usage injected unless the client asked for it.
        return not (self.inbound is Api.OPENAI and self.meta.get("stream") and not self.meta.get("want_usage"))

    def request_headers(self, client: Iterable[str] = ()) -> HeaderChanges:
        """`client`: the names of the request headers this try received (full lane): those off the
        provider's allow-list are removed (also what a previous try set for its provider). The
        try lane's cluster filtered them natively before."""
        p = self.provider
        skip_body = self.body_unchanged
        changes = HeaderChanges(remove=[*PROVIDER_HEADERS] if skip_body else [*PROVIDER_HEADERS, "content-length"])
        changes.remove += self.stage.allowed[self.provider_name].refused(client)
        if skip_body:  # the client's path without its query (which may carry a key: never forwarded)
            changes.set[":path"] = self.same_schema_path or UPSTREAM_PATHS[self.inbound]
        if skip_body and p.api is Api.ANTHROPIC:
            changes.set["anthropic-version"] = str(self.meta.get("anthropic_version") or self.opts.anthropic_version)
        self.stage.credentials[self.provider_name].apply(changes.set)
        changes.set[":authority"] = self.authority
        changes.set.update(p.headers)
        if self.inbound is Api.ANTHROPIC and p.api is Api.ANTHROPIC:
            beta = self.meta.get("anthropic_beta")
            if beta:
                changes.set["anthropic-beta"] = str(beta)
        changes.remove = [h for h in changes.remove if h not in changes.set]  # one instruction per header
        return changes

    def request_body(self, body: bytes) -> tuple[bytes, HeaderChanges]:
        parsed = orjson.loads(body)
        for h in self.hooks:
            h.request(parsed)
        if self.collect:
            self.client_body = orjson.loads(body)  # the translator may mutate `parsed`
        preq = self.translator.request(parsed, model=self.upstream_model, opts=self.opts)
        p = self.provider
        path = p.provider_path(preq.path, self.upstream_model, bool(self.meta.get("stream")))
        changes = HeaderChanges(set={":path": path, "content-length": str(len(preq.body)), **preq.headers})
        if self.inbound is Api.ANTHROPIC and p.api is Api.ANTHROPIC and p.vertex is None and self.meta.get("anthropic_version"):
            changes.set["anthropic-version"] = str(self.meta["anthropic_version"])  # the client knows its version
        signer = self.stage.signers.get(self.provider_name)
        if signer is not None:  # over the final method, path, host and body (SigV4)
            changes.set.update(signer.sign("POST", self.authority, path, changes.set, preq.body))
        return preq.body, changes

    # -- response -----------------------------------------------------------------------------
    def response_headers(self, status: int, headers: dict[str, str]) -> tuple[str, HeaderChanges]:
        """Returns the body mode wanted ('buffered' or 'streamed') and header changes."""
        self.status = status
        if status >= 400:
            self.retry_after_s = parse_retry_after(headers)
        changes = HeaderChanges(
            set={"x-sidegate-provider": self.provider_name, "x-sidegate-attempts": str(self.attempt)},
            # Provider headers off the response allow-list (the try lane's cluster removed them natively).
            remove=["content-length", *RESPONSE.refused(headers)],
        )
        for k, v in self.meta.get("response_headers", {}).items():
            changes.set[k] = str(v)
        if self.endpoint == COUNT_TOKENS:
            changes.set[TOKEN_COUNT_HEADER] = "provider"
        if self.meta.get("front") == "http":  # the front's limits are added after (ext_authz appends)
            changes.remove += [h for h in RATE_LIMIT_HEADERS if h in headers]
        secrets = self.stage.secret_strs
        # A provider (or a compromised upstream) echoing a key in a header the allow-list lets
        # through (e.g. its request id): the header is dropped.
        if secrets:  # one scan of all values (~0.5 µs), per header only on a hit
            values = "\n".join(headers.values())
            if any(s in values for s in secrets):
                changes.remove += [k for k, v in headers.items() if k[0] != ":" and any(s in v for s in secrets)]
        ctype = headers.get("content-type", "")
        if 200 <= status < 300 and ctype.startswith(STREAM_TYPES):
            self.streaming = True
            self.stream_tx = self.translator.stream(client_wants_usage=bool(self.meta.get("want_usage")),
                                                   model=self.upstream_model)
            changes.set["content-type"] = "text/event-stream"
            self.sse_in = ctype.startswith("text/event-stream")
            mode = "streamed"
        else:
            if status >= 300:
                changes.set["content-type"] = "application/json"
            mode = "buffered"
        changes.remove = [h for h in changes.remove if h not in changes.set]  # one instruction per header
        return mode, changes

    def response_body(self, body: bytes) -> bytes:
        """A buffered (non-streaming) provider body -> client body."""
        if 200 <= self.status < 300:
            try:
                out, self.usage = self.translator.response(body, model=self.upstream_model)
                for h in self.hooks:
                    out = h.response(out)
                out = self._scrub(out)
            except GatewayError as err:
                self.status = err.status
                out = format_error(self.inbound, err)
            except Exception:
                log.warning("provider %s returned an unparseable body", self.provider_name)
                err = provider_invalid_response(self.provider_name)
                self.status = 502
                out = format_error(self.inbound, err)
        else:
            refused = self.status in (401, 403) or (
                self.status == 400 and self.provider.api is Api.GEMINI and b"API_KEY_INVALID" in body
            )  # Gemini answers a wrong API key with a 400 (reason API_KEY_INVALID)
            if self.status == 429 and self.retry_after_s is None and self.provider.api is Api.GEMINI:
                self._google_retry_delay(body)
            self.status, out = self.translator.error(self.status, self._scrub(body))
            if refused and self.final:
                self.status = 502
                out = format_error(self.inbound, provider_refused_key(self.provider_name))
        self._keep(out)
        self._finish()
        return out

    def _google_retry_delay(self, body: bytes) -> None:
        """Google says when to retry a 429 in its body (RetryInfo), not in `retry-after`: the
        breaker honours it, and the client gets it as `retry-after` (a late header: the adapters
        add it with the buffered body's status)."""
        delay = retry_delay(body)
        if delay is not None:
            self.retry_after_s = delay
            self.late_headers = {"retry-after": str(math.ceil(delay))}

    def _scrub(self, body: bytes) -> bytes:
        """A provider body may echo a credential it was sent (errors often do; a compromised
        upstream may in a 200): never relay it, never cache such an answer. A `in` scan per key
        (~0.1 µs per KiB) before any rewrite."""
        for key in self.stage.secrets:
            if key in body:
                body = body.replace(key, b"[redacted]")
                self.collect = False
                self.collected.clear()
        return body

    def _keep(self, out: bytes) -> None:
        if not self.collect:
            return
        if len(self.collected) + len(out) <= self.collect_limit:
            self.collected += out
            return
        if self.collect_tail and self.streaming:  # only the last event matters: drop the ones before it
            self.collected += out
            end = len(self.collected) - 2 if self.collected.endswith(b"\n\n") else len(self.collected)
            cut = self.collected.rfind(b"\n\n", 0, end)
            if cut >= 0:  # no separator: one event so far, nothing before it to drop
                del self.collected[: cut + 2]
            if len(self.collected) <= self.collect_limit:
                return
        self.collect = False  # too large to keep
        self.collected.clear()

    def response_chunk(self, chunk: bytes, end: bool) -> bytes:
        """One provider body chunk -> client bytes (translated, PII restored)."""
        assert self.stream_tx is not None
        out = self.stream_tx.feed(chunk) if chunk else b""
        if end:
            out += self.stream_tx.finish()
        for h in self.hooks:
            out = h.stream(out, end)
        if out:
            out = self._scrub(out)
            self.chunks += 1
            if not self.first_byte_at:
                self.first_byte_at = time.monotonic()
        if end:
            return self._end_stream(out)
        self._keep(out)
        return out

    def response_parts(self, chunk: bytes, end: bool) -> Iterator[bytes]:
        """One provider body chunk -> client bytes in parts (the full-duplex per-try stream, whose
        answers are not tied to Envoy's chunks): while nothing has gone out yet, the chunk's leading
        SSE events are translated one at a time until one yields client bytes, which leave before
        the rest of the chunk (a burst read as one chunk, often with the body's end) is translated. Lazy: each part is computed
        when the caller asks for it, i.e. after the previous one was sent. The translators reassemble
        events across chunks, so a cut between events changes nothing but the timing."""
        if not self.first_byte_at and self.sse_in:
            for _ in range(_FIRST_EVENT_PROBES):
                cut = _event_end(chunk)
                if cut <= 0 or len(chunk) - cut < _SPLIT_MIN_REST:  # no whole event, or little after it
                    break
                head = self.response_chunk(chunk[:cut], False)
                chunk = chunk[cut:]
                if head:
                    yield head
                    break
        yield self.response_chunk(chunk, end)

    def _end_stream(self, out: bytes) -> bytes:
        assert self.stream_tx is not None
        self.usage = self.stream_tx.usage
        self._keep(out)
        self._finish()
        return out

    @property
    def final(self) -> bool:
        return not self.retried and not (self.status in self.retry_on and self.attempt < self.max_attempts)

    def _finish(self, aborted: bool = False) -> None:
        if self.done:
            return
        self.done = True
        now = time.monotonic()
        done = Completion(
            meta=self.meta, provider=self.provider_name, upstream_model=self.upstream_model,
            status=self.status, usage=self.usage, final=self.final, streamed=self.streaming, aborted=aborted,
            attempt=self.attempt, started_at=self.started_at, first_byte_at=self.first_byte_at or now,
            ended_at=now, chunks=self.chunks, retry_after_s=self.retry_after_s,
        )  # fmt: skip
        try:  # after the answer that ends this try has gone out (the next loop iteration)
            asyncio.get_running_loop().call_soon(self._emit, done, aborted)
        except RuntimeError:  # no event loop (pure unit tests): at once
            self._emit(done, aborted)

    def _emit(self, done: Completion, aborted: bool) -> None:
        if self.metered:
            notify(self.stage.completion_hooks, done)
        if self.collect and self.stage.filler is not None and 200 <= self.status < 300 and not aborted:
            if any(key in self.collected for key in self.stage.secrets):  # defence in depth: chunks were scrubbed one by one
                return
            self.stage.filler.fill(self.meta, self.client_body, bytes(self.collected), self.streaming, self.usage)

    def close(self, retried: bool = False) -> None:
        """The ext_proc stream ended (normally, or the client/upstream went away). `retried`: Envoy
        has started the request's next try (this one timed out): that try settles, not this one."""
        if retried:
            self.retried = True
        if not self.done:
            # The stream's terminal event went out before Envoy saw the provider's end (the client
            # read it and hung up at once, racing the end of the provider's body): not an abort.
            complete = False
            if self.stream_tx is not None:
                self.usage = self.stream_tx.usage
                complete = self.stream_tx.done
            self._finish(aborted=not complete)


class TryStage(TryProviders):
    """What every try of this process shares: the config, each provider's credential and header
    allow-list, the secrets to scrub (:class:`TryProviders`), and the features' hooks (completion,
    fill, per-try)."""

    def __init__(
        self, cfg: SidegateConfig, completion_hooks: list[CompletionHook] | None = None, filler: Filler | None = None,
        on_try: tuple[OnTry, ...] = (),
    ):  # fmt: skip
        super().__init__(cfg)
        self.completion_hooks: list[CompletionHook] = completion_hooks or []
        self.filler: Fillers | None = filler if isinstance(filler, Fillers) or filler is None else Fillers([filler.fill])
        """The fill hooks by metadata key (a bare filler is the cache's, `cache_fill`)."""
        self.on_try = on_try

    def start_try(self, meta: dict[str, Any], cluster: str, attempt: int) -> ProviderTry:
        return ProviderTry(self, meta, cluster, attempt)
