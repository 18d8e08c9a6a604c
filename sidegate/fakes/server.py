"""`FakeProvider`: an aiohttp server speaking the OpenAI, Azure OpenAI and Anthropic wire formats."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from sidegate.fakes import bedrock, wire_anthropic, wire_openai, wire_responses
from sidegate.fakes.answer import build_answer
from sidegate.fakes.behavior import Behavior, Script
from sidegate.fakes.conversation import Conversations
from sidegate.fakes.faults import Dropped, before_headers
from sidegate.fakes.gemini_checks import warm_up as warm_up_gemini
from sidegate.fakes.gemini_serve import gemini_endpoint, serve_gemini
from sidegate.fakes.recording import RecordedRequest, RequestLog
from sidegate.fakes.routes import authorized, route, validate, wants_stream
from sidegate.fakes.stream import api_events, stream_answer
from sidegate.fakes.tokens import bearer_refusal
from sidegate.fakes.validation import sdk_problem, warm_up
from sidegate.fakes.vertex_anthropic import messages_body, vertex_anthropic
from sidegate.fakes.wire_gemini import parse_path as gemini_call

__all__ = ["DEFAULT_MODELS", "FakeProvider"]

DEFAULT_MODELS = [
    "gpt-4o-mini",
    "gpt-4o",
    "text-embedding-3-small",
    "claude-3-5-haiku-20241022",
    "claude-sonnet-4-5",
]
_JSON = "application/json"
MAX_BODY_BYTES = 512 * 1024 * 1024
"""Largest request body the fakes read: above any gateway limit (the providers take 32 MiB and more)."""
_GARBAGE = b'{"id": "chatcmpl-garbage", "choices": [{"index": 0, "message": {"content": "cut'
_UNSET = object()


def _nodelay(request: web.BaseRequest) -> None:
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class FakeProvider:
    """A fake LLM provider on one port serving both schemas.

    Routes: OpenAI `POST /v1/chat/completions`, `POST /v1/responses`, `POST /v1/embeddings`,
    `GET /v1/models`; Azure `POST /openai/deployments/{d}/chat/completions|embeddings` and
    `POST /openai/v1/responses`; Anthropic `POST /v1/messages` (and
    `GET /v1/models` when the request has `anthropic-version`); Gemini `POST /v1beta/models/{m}:method`
    (generateContent, streamGenerateContent, embedContent, batchEmbedContents, countTokens) and the
    same on Vertex AI's `/v1/projects/{p}/locations/{l}/publishers/google/models/{m}:method`
    (gemini_serve.py). Control: `GET|DELETE /_fake/requests`,
    `POST|GET|DELETE /_fake/script`, `POST /_fake/default`, `POST /_fake/reset`.

    `chunks`/`chunk_delay_s` shape streams; `fixed_text` replaces the "Echo: <last user text>" answer;
    `api_key`, when set, must be presented (Bearer, `x-api-key` or `api-key`) or the answer is 401;
    `token_check` (e.g. a `TokenIssuer`'s `valid`), when set, must accept the bearer token of every
    Vertex AI and Azure OpenAI request or the answer is the cloud's 401;
    `responses_api=False` makes the Responses API paths unknown (404), as on most OpenAI-shaped servers.
    AWS Bedrock's Converse API: `POST /model/{modelId}/converse|converse-stream`, SigV4-verified
    against `aws_keys` for `aws_region` (or a Bedrock API key: `api_key` as a bearer token).
    Bodies the official SDKs' request types refuse get the real API's 400 (`validation.py`;
    docs/fakes.md).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        chunks: int = 4,
        chunk_delay_s: float = 0.0,
        fixed_text: str | None = None,
        models: list[str] | None = None,
        embedding_dims: int = 1536,
        api_key: str | None = None,
        responses_api: bool = True,
        max_log: int = 10_000,
        aws_keys: dict[str, str | tuple[str, str]] | None = None,
        aws_region: str = "us-east-1",
        token_check: Callable[[str], bool] | None = None,
    ) -> None:
        self.host = host
        self._port = port
        self.chunks = chunks
        self.chunk_delay_s = chunk_delay_s
        self.fixed_text = fixed_text
        self.models = list(models or DEFAULT_MODELS)
        self.embedding_dims = embedding_dims
        self.api_key = api_key
        self.responses_api = responses_api  # False: an OpenAI-shaped provider without /v1/responses
        self.token_check = token_check  # cloud paths: only the bearer tokens its issuer minted, unexpired
        self.log = RequestLog(max_log)
        self._script = Script()
        self._runner: web.ServerRunner | None = None
        self._closing = False
        self.served = 0  # requests received (excluding control calls)
        self.in_flight = 0  # handlers running now (a hang releases its slot when the client leaves)
        self.conversations = Conversations(max_log)  # the Responses API ids this provider issued
        # Bedrock: SigV4 keys it accepts (access key id -> secret, or (secret, session token));
        # replace the dict to rotate. None: Bedrock requests are not authenticated (unless `api_key`).
        self.aws_keys = aws_keys
        self.aws_region = aws_region

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> FakeProvider:
        warm_up()  # the SDK request types, once per process, before the first request
        warm_up_gemini()
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((self.host, self._port))
        self._port = sock.getsockname()[1]
        server = web.Server(self._handle, request_factory=self._request, handler_cancellation=True, access_log=None)
        self._runner = web.ServerRunner(server, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.SockSite(self._runner, sock, backlog=1024).start()
        self._closing = False
        return self

    @staticmethod
    def _request(message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> web.BaseRequest:
        """Bodies as large as the providers take (aiohttp's own default refuses over 1 MiB)."""
        return web.BaseRequest(message, payload, protocol, writer, task, asyncio.get_running_loop(),
                               client_max_size=MAX_BODY_BYTES)  # fmt: skip

    async def stop(self) -> None:
        self._closing = True
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeProvider:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}"

    def _is_closing(self) -> bool:
        return self._closing

    # -- control (in-process; thread-safe) ---------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        """Requests received so far (oldest first, capped), excluding `/_fake/*` control calls."""
        return self.log.items()

    def clear_requests(self) -> None:
        self.log.clear()

    def script(self, behaviors: list[dict[str, Any] | Behavior]) -> None:
        """Queue behaviours; each is consumed by the next matching request (see `Behavior`)."""
        self._script.push(behaviors)

    def set_default(self, behavior: dict[str, Any] | Behavior | None) -> None:
        """The behaviour for requests no queued behaviour matches (None: normal answers)."""
        self._script.set_default(behavior)

    @property
    def pending_script(self) -> list[Behavior]:
        return self._script.pending()

    def reset(self) -> None:
        """Clear the script, the default behaviour and the request log."""
        self._script.clear()
        self.log.clear()

    # -- HTTP ------------------------------------------------------------------------------------
    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        if path.startswith("/_fake/"):
            return await self._control(request, path)
        _nodelay(request)
        body = await request.read()
        parsed: Any = None
        bad_json = False
        if body:
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError:
                bad_json = True
        hdrs: dict[str, str] = {}
        for k, v in request.headers.items():
            k = k.lower()
            hdrs[k] = f"{hdrs[k]}, {v}" if k in hdrs else v
        self.log.add(
            RecordedRequest(
                request.method,
                path,
                dict(request.query),
                hdrs,
                body,
                parsed,
                time.time(),
                route(request.method, path) or gemini_endpoint(request.method, path),
            )
        )
        self.served += 1
        self.in_flight += 1
        try:
            if path.startswith("/model/"):  # AWS Bedrock (sidegate/fakes/bedrock.py)
                return await bedrock.serve(self, request, hdrs, body, parsed, bad_json)
            return await self._serve(request, path, hdrs, parsed, bad_json)
        except Dropped:
            # The connection is gone; aiohttp cancels this handler when it notices (bounded wait).
            await asyncio.sleep(1.0)
            raise
        finally:
            self.in_flight -= 1

    async def _serve(
        self, request: web.BaseRequest, path: str, hdrs: dict[str, str], body: Any, bad_json: bool
    ) -> web.StreamResponse:
        refusal = bearer_refusal(path, hdrs, self.token_check) if self.token_check is not None else None
        if refusal is not None:  # Vertex AI (Gemini, Anthropic) and Azure: only the issuer's live tokens
            return web.Response(status=401, body=refusal, content_type=_JSON)
        gemini = gemini_call(path)
        if gemini is not None:  # Google's paths, keys and error bodies: gemini_serve.py
            return await serve_gemini(self, request, gemini, hdrs, body, bad_json)
        anthropic = path.startswith("/v1/messages") or (path == "/v1/models" and "anthropic-version" in hdrs)
        on_vertex = vertex_anthropic(path)  # Anthropic on Vertex AI: (model, stream path)
        anthropic = anthropic or on_vertex is not None
        rid = "req_" + uuid.uuid4().hex[:24]
        started = time.monotonic()
        base_headers = wire_anthropic.headers(rid) if anthropic else wire_openai.headers(rid, 1)

        def error(
            status: int,
            err: str | dict[str, Any] | None = None,
            retry_after: Any = None,
            extra: dict[str, str] | None = None,
        ) -> web.Response:
            payload = (
                wire_anthropic.error_body(status, err, rid)
                if anthropic
                else wire_openai.error_body(status, err)
            )
            h = {**base_headers, **(extra or {})}
            if retry_after is not None:
                h["retry-after"] = str(retry_after)
            elif status == 429:
                h["retry-after"] = "1"
            if status == 429 and not anthropic:
                h["x-ratelimit-remaining-requests"] = "0"
            return web.Response(status=status, body=payload, content_type=_JSON, headers=h)

        # Authentication first, as the real providers do (does not consume the script).
        if self.api_key is not None and not authorized(self.api_key, hdrs):
            return error(401)
        model = body.get("model") if isinstance(body, dict) else None
        if path.startswith("/openai/deployments/"):
            deployment = path.split("/")[3]
            if isinstance(body, dict) and not isinstance(body.get("model"), str):
                body = {**body, "model": deployment}
            model = deployment
        if on_vertex is not None:  # the Messages body it stands for (model from the path)
            body, problem = messages_body(body, *on_vertex)
            if problem:
                return error(400, problem)
            model = on_vertex[0]  # (`count-tokens` for a count)
        b = self._script.take(path, model if isinstance(model, str) else None)
        if b is not None:
            await before_headers(request, b, self._is_closing)
            if b.empty:
                h = {
                    **base_headers,
                    **b.headers,
                    **({"retry-after": str(b.retry_after)} if b.retry_after is not None else {}),
                }
                return web.Response(status=b.status, body=b"", headers=h)
            if b.status != 200 or b.error is not None:
                status = b.status if b.status != 200 else 500
                return error(status, b.error, b.retry_after, b.headers)
            if b.garbage and not wants_stream(body):
                return web.Response(
                    status=200, body=_GARBAGE, content_type=_JSON, headers={**base_headers, **b.headers}
                )
        endpoint = route(request.method, path)
        if endpoint == "responses" and not self.responses_api:
            endpoint = None  # as vLLM, Ollama, Groq...: the path is unknown
        if endpoint is None:
            return error(404, "Not found" if anthropic else f"Invalid URL ({request.method} {path})")
        if endpoint == "models":
            payload = wire_anthropic.models(self.models) if anthropic else wire_openai.models(self.models)
            return web.Response(body=payload, content_type=_JSON, headers=base_headers)
        if bad_json or not isinstance(body, dict):
            return error(
                400,
                "We could not parse the JSON body of your request."
                if not anthropic
                else "There was an error parsing the body of your request.",
            )
        problem = (
            validate(endpoint, body)
            or sdk_problem(endpoint, body, hdrs.get("anthropic-version"))
            or self.conversations.problem(endpoint, body)
        )
        if problem:
            return error(400, problem)
        if endpoint == "count_tokens":
            return web.Response(body=wire_anthropic.count_tokens(body), content_type=_JSON, headers=base_headers)
        if endpoint == "embeddings":
            return web.Response(
                body=wire_openai.embeddings(body, self.embedding_dims),
                content_type=_JSON,
                headers=base_headers,
            )
        responses = endpoint == "responses"
        if responses:
            answer = wire_responses.build(body, b, fixed_text=self.fixed_text, chunks=self.chunks)
            resp_id = self.conversations.issue(body, frozenset(c.id for c in answer.tool_calls))
        else:
            answer = build_answer(body, b, fixed_text=self.fixed_text, chunks=self.chunks)
        extra = b.headers if b else {}
        if not body.get("stream"):
            if not anthropic:
                base_headers["openai-processing-ms"] = str(int((time.monotonic() - started) * 1000) + 1)
            if responses:
                payload = wire_responses.response_body(answer, body, resp_id)
            else:
                payload = wire_anthropic.message(answer) if anthropic else wire_openai.completion(answer)
            headers = {**base_headers, **extra}
            if any(k.lower() == "content-type" for k in headers):  # scripted: e.g. with a charset
                return web.Response(body=payload, headers=headers)
            return web.Response(body=payload, content_type=_JSON, headers=headers)
        if responses:
            events, error_event = (
                wire_responses.stream_events(answer, body, resp_id),
                wire_responses.error_event,
            )
        else:
            events = api_events(answer, body, anthropic)
            error_event = wire_anthropic.error_event if anthropic else wire_openai.error_event
        return await stream_answer(
            request,
            events,
            error_event,
            b,
            {**base_headers, **extra},
            chunk_delay_s=self.chunk_delay_s,
            closing=self._is_closing,
        )

    # -- control endpoints -------------------------------------------------------------------------
    async def _control(self, request: web.BaseRequest, path: str) -> web.Response:
        method = request.method
        try:
            if path == "/_fake/requests":
                if method == "DELETE":
                    self.clear_requests()
                    return _json({"cleared": True})
                return _json([r.to_dict() for r in self.requests])
            if path == "/_fake/script":
                if method == "DELETE":
                    self._script.clear()
                    return _json({"cleared": True})
                if method == "POST":
                    items = orjson.loads(await request.read())
                    self.script(items if isinstance(items, list) else [items])
                return _json({"pending": len(self.pending_script)})
            if path == "/_fake/default" and method in ("POST", "PUT"):
                raw = await request.read()
                self.set_default(orjson.loads(raw) if raw.strip() else None)
                return _json({"ok": True})
            if path == "/_fake/reset" and method == "POST":
                self.reset()
                return _json({"ok": True})
            if path == "/_fake/health":
                return _json({"ok": True, "served": self.served})
        except (ValueError, TypeError) as e:
            return _json({"error": str(e)}, status=400)
        return _json({"error": "unknown control endpoint"}, status=404)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type=_JSON)
