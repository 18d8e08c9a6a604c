"""The translator for a Responses client and a provider of another API: the canonical translator
plus what a Responses answer needs beyond the form (the gateway's own ids, the echo of the
request, OpenAI's error statuses)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sidegate.errors import Api
from sidegate.translate.base import Usage
from sidegate.translate.codecs.responses.response import encode_response
from sidegate.translate.codecs.responses.shapes import IdFactory, new_id, request_echo
from sidegate.translate.codecs.responses.stream import ResponsesStreamEncoder
from sidegate.translate.codecs.translator import CanonicalStream, CanonicalTranslator
from sidegate.translate.common import bad_response, client_error, dumps, loads_object


class ResponsesClientTranslator(CanonicalTranslator):
    """``response`` and ``stream`` take the client's request body as an optional ``request`` so
    the answer echoes its tools, tool_choice, temperature... as the API does; without it the
    answer carries the API's defaults (what the ``openai`` SDK needs to parse it)."""

    def __init__(
        self, upstream: Api, clock: Callable[[], int] | None = None, ids: IdFactory = new_id
    ) -> None:
        super().__init__(Api.RESPONSES, upstream, clock)
        self.ids = ids

    def response(
        self, body: bytes, *, request: dict[str, Any] | None = None, model: str = ""
    ) -> tuple[bytes, Usage | None]:
        obj = loads_object(body)
        if obj is None:
            raise bad_response()
        resp = self._decode_response(obj)
        resp.model = resp.model or model
        echo = request_echo(request) if request is not None else None
        return dumps(encode_response(resp, self.clock(), ids=self.ids, echo=echo)), resp.usage

    def stream(
        self, *, client_wants_usage: bool, request: dict[str, Any] | None = None, model: str = ""
    ) -> CanonicalStream:
        echo = request_echo(request) if request is not None else None
        encoder = ResponsesStreamEncoder(created=self.clock(), ids=self.ids, echo=echo)
        return CanonicalStream(self.stream_decoder(model), encoder)

    def error(self, status: int, body: bytes) -> tuple[int, bytes]:
        # Anthropic's 529 "overloaded" has no OpenAI counterpart: 503 is what OpenAI's SDKs retry.
        return client_error(Api.RESPONSES, 503 if status == 529 else status, body)
