"""grpc.aio adapter: one `envoy.service.ext_proc.v3.ExternalProcessor` service for both phases.

Envoy opens a stream per request for the gateway filter and one per try for the upstream filter;
the `x-sidegate-phase` gRPC initial metadata (set in the rendered bootstrap) tells them apart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import grpc
import orjson
from envoy.extensions.filters.http.ext_proc.v3.processing_mode_pb2 import ProcessingMode
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from envoy.type.v3.http_status_pb2 import HttpStatus
from google.protobuf.struct_pb2 import Struct

from extproc.prepared import PREPARED_META, authz_fields, prepare_stream, prepared_for
from sidegate.core.context import Reply, RequestContext, request_meta
from sidegate.core.intake import GEMINI_KEY_HEADER, client_internal_headers, open_request, without_key
from sidegate.core.pipeline import Forward, Gateway
from sidegate.core.traceparent import HEADER as TRACEPARENT
from sidegate.core.traceparent import set_try_parent, valid_traceparent
from sidegate.core.tries import HeaderChanges, ProviderTry, TryStage
from sidegate.core.try_endpoints import TryAnswered
from sidegate.envoy_pb import header_options, headers_to_dict, struct, struct_to_dict
from sidegate.errors import Api, GatewayError, format_error
from sidegate.features.auth.jwt import header_value as jwt_header_value
from sidegate.trust import Token, require
from sidegate.wire import (
    AUTHZ_NS,
    JWT_HEADER,
    JWT_NS,
    META_NS,
    PHASE_HEADER,
    REPLY_DETAILS,
    ROUTE_HEADER,
    ROUTE_KEY,
    TryWire,
)

log = logging.getLogger("sidegate.extproc")

_CONTINUE = pb.CommonResponse()
_BUFFERED = ProcessingMode(response_body_mode=ProcessingMode.BUFFERED)
_STREAMED = ProcessingMode(response_body_mode=ProcessingMode.STREAMED)
_FULL_DUPLEX = ProcessingMode(response_body_mode=ProcessingMode.FULL_DUPLEX_STREAMED,
                              response_trailer_mode=ProcessingMode.SEND)  # fmt: skip
"""A provider stream: answers not tied to Envoy's chunks (several per chunk, or none), so a burst's
first event leaves before the rest of its chunk is translated (FULL_DUPLEX_STREAMED needs trailers
SEND)."""
_NO_REQUEST_BODY = ProcessingMode(
    request_body_mode=ProcessingMode.NONE, response_header_mode=ProcessingMode.SEND,
    response_body_mode=ProcessingMode.STREAMED,
)  # fmt: skip


_BLANK_PREPARED = {AUTHZ_NS: struct({AUTHZ_NS: {TryWire.BODY: "", TryWire.CLIENT_BODY: ""}}),
                   META_NS: struct({META_NS: {PREPARED_META: {}}})}  # fmt: skip
"""A used prepared body, blanked in the namespace that carried it (only there: a `sidegate`
namespace set behind the HTTP front would hide the ext_authz one from the next try)."""


def _mutation(changes: HeaderChanges) -> pb.HeaderMutation:
    return pb.HeaderMutation(set_headers=header_options(changes.set), remove_headers=changes.remove)


def _immediate(reply: Reply) -> pb.ProcessingResponse:
    return pb.ProcessingResponse(
        immediate_response=pb.ImmediateResponse(
            status=HttpStatus(code=reply.status),
            headers=_header_mutation(reply.headers),
            body=reply.body,
            details=REPLY_DETAILS,
        )
    )


def _header_mutation(headers: dict[str, str], remove: list[str] | None = None) -> pb.HeaderMutation:
    return pb.HeaderMutation(set_headers=header_options(headers), remove_headers=remove or [])


def _struct_fields(struct_msg: Any) -> dict[str, Any]:
    return struct_to_dict(struct_msg) if struct_msg is not None else {}


def _passthrough(req: pb.ProcessingRequest) -> pb.ProcessingResponse:
    """A no-op answer of the right kind for any message we did not ask for."""
    kind = req.WhichOneof("request")
    if kind in ("request_headers", "response_headers"):
        return pb.ProcessingResponse(**{kind: pb.HeadersResponse(response=_CONTINUE)})
    if kind in ("request_body", "response_body"):
        return pb.ProcessingResponse(**{kind: pb.BodyResponse(response=_CONTINUE)})
    return pb.ProcessingResponse(**{kind: pb.TrailersResponse()})


class GatewayStream:
    """Router-level stream: request headers + buffered body -> Gateway.run -> route/short-circuit."""

    def __init__(self, gateway: Gateway, traceparent: str = "", tries: TryStage | None = None):
        self.gateway = gateway
        self.tries = tries
        """The per-try stage, to prepare a stream's first try (extproc/prepared.py)."""
        self.ctx: RequestContext | None = None
        self.traceparent = traceparent
        """The stream's gRPC `traceparent`: Envoy's span of this ext_proc call, a child of the
        request's span (Envoy tracing); the request headers then still carry only the client's."""

    async def handle(self, req: pb.ProcessingRequest) -> pb.ProcessingResponse:
        kind = req.WhichOneof("request")
        if kind == "request_headers":
            headers = headers_to_dict(req.request_headers.headers)
            authz = req.metadata_context.filter_metadata.get(AUTHZ_NS)
            auth = _struct_fields(authz) if authz is not None else {}
            attrs = req.attributes.get("envoy.filters.http.ext_proc")
            source = ""
            if attrs is not None and "source.address" in attrs.fields:
                source = attrs.fields["source.address"].string_value.rsplit(":", 1)[0]
            jwt = req.metadata_context.filter_metadata.get(JWT_NS)
            if jwt is not None:  # inline auth with JWT callers: what Envoy's jwt_authn found
                headers[JWT_HEADER] = jwt_header_value(struct_to_dict(jwt))
            elif JWT_HEADER in headers:  # never the client's
                del headers[JWT_HEADER]
            if auth.get("api") == Api.GEMINI.value:  # ext_authz took the key away, it said whose format this is
                headers.setdefault(GEMINI_KEY_HEADER, "")
            opened = open_request(headers.get(":path", "/"), headers.get(":method", "GET"), headers, source=source,
                                  tenant=str(auth.get("tenant", "")), key_id=str(auth.get("key_id", "")),
                                  allowed_models=tuple(auth.get("models", ())), team=str(auth.get("team", "")),
                                  user=str(auth.get("user", "")))  # fmt: skip
            if isinstance(opened, Reply):
                return _immediate(opened)
            self.ctx = opened
            if self.traceparent or TRACEPARENT in headers:  # (untraced: one dict lookup)
                opened.traceparent = valid_traceparent(self.traceparent) or valid_traceparent(headers.get(TRACEPARENT))
            early = self.gateway.on_headers(opened)
            if early is not None:
                return _immediate(early)
            if req.request_headers.end_of_stream:
                return await self._run()
            internal = client_internal_headers(headers)
            if internal:  # never trust internal headers from the client
                return pb.ProcessingResponse(
                    request_headers=pb.HeadersResponse(response=pb.CommonResponse(header_mutation=_header_mutation({}, internal)))
                )
            return pb.ProcessingResponse(request_headers=pb.HeadersResponse(response=_CONTINUE))
        if kind == "request_body" and self.ctx is not None:
            self.ctx.raw_body = req.request_body.body
            return await self._run()
        return _passthrough(req)

    async def _run(self) -> pb.ProcessingResponse:
        assert self.ctx is not None
        ctx = self.ctx
        outcome = await self.gateway.run(ctx)
        if isinstance(outcome, Reply):
            return _immediate(outcome)
        assert isinstance(outcome, Forward)
        set_headers = {ROUTE_HEADER: outcome.route}
        if ctx.api is Api.GEMINI and "?" in ctx.path:  # inline auth: a Gemini client's `?key=` goes no further
            path = without_key(ctx.path)
            if path != ctx.path:
                set_headers[":path"] = path
        body_mutation = None
        if outcome.body is not None:
            set_headers["content-length"] = str(len(outcome.body))
            body_mutation = pb.BodyMutation(body=outcome.body)
        common = pb.CommonResponse(
            header_mutation=_header_mutation(set_headers, outcome.remove_headers),
            body_mutation=body_mutation,
            clear_route_cache=True,
        )
        meta_values = {**outcome.meta, ROUTE_KEY: outcome.route}  # routes match it too
        if self.tries is not None:  # a full-lane stream's first try, translated now (extproc/prepared.py)
            prepared = prepare_stream(self.tries, meta_values, ctx.raw_body, rewritten=outcome.body is not None)
            if prepared:
                meta_values[PREPARED_META] = prepared
        meta = struct({META_NS: meta_values})
        return pb.ProcessingResponse(request_body=pb.BodyResponse(response=common), dynamic_metadata=meta)


def _try_of(req: pb.ProcessingRequest) -> tuple[dict[str, Any], str, int]:
    """A try's request metadata, cluster and attempt number (its first message)."""
    meta = request_meta(req.metadata_context.filter_metadata) or {}
    meta.pop(PREPARED_META, None)  # (the gRPC front's prepared first try: read apart, never kept)
    attrs = req.attributes.get("envoy.filters.http.ext_proc")
    fields = attrs.fields if attrs is not None else {}
    cluster = fields["xds.cluster_name"].string_value if "xds.cluster_name" in fields else ""
    attempt = int(fields["upstream.request_attempt_count"].number_value) if "upstream.request_attempt_count" in fields else 1
    return meta, cluster, attempt


def _prepared_values(req: pb.ProcessingRequest) -> tuple[dict[str, str] | None, str]:
    """The prepared first try's values and the namespace that carried them: the HTTP front's
    (ext_authz metadata) or the gRPC front's (one key of the gateway's metadata)."""
    md = req.metadata_context.filter_metadata
    gateway = md.get(META_NS)
    if gateway is not None and PREPARED_META in gateway.fields:
        values = struct_to_dict(gateway.fields[PREPARED_META].struct_value)
        return {k: v for k, v in values.items() if isinstance(v, str)}, META_NS
    return authz_fields(md.get(AUTHZ_NS)), AUTHZ_NS


class UpstreamStream:
    """Per-try stream: translate the request for this try's provider, then the response back."""

    def __init__(self, tries: TryStage):
        self.tries = tries
        self.try_: ProviderTry | None = None
        self.api = Api.OPENAI
        self._first: tuple[dict[str, Any], str, int] | None = None

    async def handle(self, req: pb.ProcessingRequest) -> pb.ProcessingResponse | Iterator[pb.ProcessingResponse | None]:
        """The answer to one message: one response, or (a streamed provider body) a lazy series of
        zero or more, each computed after the previous one was sent."""
        kind = req.WhichOneof("request")
        if self.try_ is not None and self.try_.streaming and kind in ("response_body", "response_trailers"):
            return self._stream(self.try_, req, kind)
        try:
            if kind == "request_headers":  # a try of a provider or version not known yet (live routing)
                self._first = first = _try_of(req)
                if not self.tries.ready(first[0], first[1]):
                    await self.tries.learn(first[0])
            return self._handle(kind, req)
        except TryAnswered as answered:  # the per-try stage answers this try itself (no provider)
            return _immediate(answered.reply)
        except GatewayError as err:
            return _immediate(Reply(err.status, format_error(self.api, err), {"content-type": "application/json"}))

    def _start(self, req: pb.ProcessingRequest) -> ProviderTry:
        meta, cluster, attempt = self._first or _try_of(req)
        self.api = Api(meta.get("api", "openai"))
        if TRACEPARENT in meta:  # a traced request: Envoy's span of this try is in the headers the router sent
            for h in req.request_headers.headers.headers:
                if h.key == TRACEPARENT:
                    set_try_parent(meta, h.raw_value or h.value)
                    break
        self.try_ = self.tries.start_try(meta, cluster, attempt)
        return self.try_

    def _handle(self, kind: str | None, req: pb.ProcessingRequest) -> pb.ProcessingResponse:
        t = self.try_
        if kind == "request_headers":
            t = self._start(req)
            client = [h.key for h in req.request_headers.headers.headers]
            changes = t.request_headers(client)
            values, ns = _prepared_values(req)
            prepared = prepared_for(t, values)
            if prepared is not None:  # the front translated the body: no body message (extproc/prepared.py)
                return self._replace_body(t, changes, *prepared, blank=_BLANK_PREPARED[ns])
            resp = pb.ProcessingResponse(
                request_headers=pb.HeadersResponse(response=pb.CommonResponse(header_mutation=_mutation(changes)))
            )
            if t.body_unchanged:  # one round trip less: Envoy sends the body on without asking us
                resp.mode_override.CopyFrom(_NO_REQUEST_BODY)
            return resp
        if t is None:  # request headers always come first on this filter (SEND, see sidegate/bootstrap/listener.py)
            return _passthrough(req)
        if kind == "request_body":
            body, changes = t.request_body(req.request_body.body)
            common = pb.CommonResponse(header_mutation=_mutation(changes), body_mutation=pb.BodyMutation(body=body))
            return pb.ProcessingResponse(request_body=pb.BodyResponse(response=common))
        if kind == "response_headers":
            headers = headers_to_dict(req.response_headers.headers)
            status = int(headers.get(":status", "0") or 0)
            mode, changes = t.response_headers(status, headers)
            resp = pb.ProcessingResponse(
                response_headers=pb.HeadersResponse(response=pb.CommonResponse(header_mutation=_mutation(changes))),
                mode_override=_BUFFERED if mode == "buffered" else _FULL_DUPLEX,
            )
            if req.response_headers.end_of_stream:  # no body at all
                t.response_body(b"")
            return resp
        if kind == "response_body":
            rb = req.response_body  # buffered (a stream's chunks go to _stream)
            status_before = t.status
            out = t.response_body(rb.body)
            # Buffered: the headers are still held, so the translated status (and the headers
            # only the body told, e.g. Google's retry delay) can be set here.
            late = {":status": str(t.status)} if t.status != status_before else {}
            if t.late_headers:
                late.update(t.late_headers)
            header_mutation = _header_mutation(late) if late else None
            mutation = pb.BodyMutation(body=out) if out else pb.BodyMutation(clear_body=True)
            common = pb.CommonResponse(body_mutation=mutation, header_mutation=header_mutation)
            return pb.ProcessingResponse(response_body=pb.BodyResponse(response=common))
        return _passthrough(req)

    @staticmethod
    def _replace_body(t: ProviderTry, changes: HeaderChanges, body: bytes, body_set: dict[str, str],
                      client: bytes, blank: Struct) -> pb.ProcessingResponse:  # fmt: skip
        """The request-headers answer that also sets the provider's body: CONTINUE_AND_REPLACE, so
        Envoy drops the client's body and sends no body message (the body's round trip saved). The
        prepared body is blanked in the metadata: it does not reach a later try (which translates
        its own) or outlive the try."""
        if client:  # a fill's client body (the gRPC stream may be on another worker than the check)
            t.client_body = orjson.loads(client)
        changes.set.update(body_set)
        changes.set["content-length"] = str(len(body))
        changes.remove = [h for h in changes.remove if h not in changes.set]
        common = pb.CommonResponse(status=pb.CommonResponse.CONTINUE_AND_REPLACE, header_mutation=_mutation(changes),
                                   body_mutation=pb.BodyMutation(body=body))  # fmt: skip
        return pb.ProcessingResponse(request_headers=pb.HeadersResponse(response=common), dynamic_metadata=blank)

    @staticmethod
    def _stream(t: ProviderTry, req: pb.ProcessingRequest, kind: str) -> Iterator[pb.ProcessingResponse | None]:
        """A provider stream's chunk (FULL_DUPLEX_STREAMED): its client bytes in parts, the first
        event's alone (ProviderTry.response_parts); a part with no bytes is not sent, except the
        last one, which ends the client's body. Between two parts, _FLUSH: grpc.aio's write of a
        message completes before its bytes leave, which happens on the event loop's next turn, so
        without it the first part went out only with the second (measured: +1.7-1.9 ms for a 500-event
        burst). Trailers (an HTTP/2 provider's): the stream's last bytes, then the trailers, which
        end it."""
        if kind == "response_trailers":  # the body ended without end_of_stream: the trailers end it
            yield _streamed(t.response_chunk(b"", True), False)
            yield pb.ProcessingResponse(response_trailers=pb.TrailersResponse())
            return
        rb = req.response_body
        sent = False
        for out in t.response_parts(rb.body, rb.end_of_stream):
            if out or t.done:
                if sent:
                    yield _FLUSH
                yield _streamed(out, t.done)
                sent = True

    def close(self) -> None:
        if self.try_ is not None:
            self.try_.close()


_FLUSH = None
"""In a stream's series of answers: give the event loop a turn (the answer before leaves now)."""


def _streamed(body: bytes, end: bool) -> pb.ProcessingResponse:
    mutation = pb.BodyMutation(streamed_response=pb.StreamedBodyResponse(body=body, end_of_stream=end))
    return pb.ProcessingResponse(response_body=pb.BodyResponse(response=pb.CommonResponse(body_mutation=mutation)))


def answer_parts(
    answer: pb.ProcessingResponse | Iterator[pb.ProcessingResponse | None],
) -> Iterable[pb.ProcessingResponse | None]:
    """A handler's answer to one message as the messages to send, for either server: one, or a
    stream chunk's parts, each computed only after the previous one was sent; None between parts
    means "send what you have now, before the next part is computed"."""
    return (answer,) if isinstance(answer, pb.ProcessingResponse) else answer


class ExternalProcessor(pb_grpc.ExternalProcessorServicer):
    def __init__(self, gateway: Gateway, tries: TryStage, token: Token):
        self.gateway = gateway
        self.tries = tries
        self.token = token
        """The internal token: without it a stream gets nothing (the per-try stage hands out
        provider credentials)."""
        self.active = 0
        """Open ext_proc streams (a graceful stop waits for them)."""

    def open(self, metadata: Any) -> GatewayStream | UpstreamStream:
        """A stream's handler, from its request metadata ((key, value) pairs, the token checked):
        the phase Envoy's filter names and Envoy's span of the call. Paired with :meth:`closed`."""
        phase = traceparent = ""
        for key, value in metadata or ():
            if key == PHASE_HEADER:
                phase = value if isinstance(value, str) else value.decode()
            elif key == TRACEPARENT:  # Envoy's span of this call (only when Envoy traces)
                traceparent = value if isinstance(value, str) else value.decode(errors="replace")
        self.active += 1
        if phase == "upstream":
            return UpstreamStream(self.tries)
        return GatewayStream(self.gateway, traceparent, self.tries)

    def closed(self, handler: GatewayStream | UpstreamStream) -> None:
        self.active -= 1
        if isinstance(handler, UpstreamStream):
            handler.close()

    async def Process(
        self, request_iterator: AsyncIterator[pb.ProcessingRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ProcessingResponse]:
        await require(self.token, context)
        handler = self.open(context.invocation_metadata())
        try:
            async for req in request_iterator:
                for part in answer_parts(await handler.handle(req)):
                    if part is None:  # a part went out and another follows: let the loop write it first
                        await asyncio.sleep(0)
                    else:
                        yield part
        finally:
            self.closed(handler)
