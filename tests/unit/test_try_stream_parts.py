"""A translated stream's first event leaves before the rest of the same read is translated: the
per-try stage answers a provider chunk in parts (ProviderTry.response_parts), and the ext_proc
adapter sends each part as its own FULL_DUPLEX_STREAMED body response, computed only after the
previous one was sent. The client bytes are the same as one answer per chunk gave."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from extproc.server import UpstreamStream
from sidegate import config
from sidegate.core.completion import Completion
from sidegate.core.tries import ProviderTry, TryStage
from sidegate.fakes import wire_anthropic
from sidegate.fakes.answer import Answer

CFG = config.parse({
    "providers": {"ant": {"api": "anthropic", "base_url": "http://127.0.0.1:11", "api_key_env": "K2"}},
    "models": {"claude": {"routes": [{"provider": "ant", "model": "claude-3-5-haiku-20241022"}]}},
}, env={"K2": "sk-2"})  # fmt: skip
META = {"api": "openai", "model": "claude", "stream": True, "want_usage": True}


def burst(n: int) -> bytes:
    """An Anthropic stream of n content events, as one read (the provider wrote them at once)."""
    answer = Answer(model="claude-3-5-haiku-20241022", text=" ".join(f"w{i}" for i in range(n)), tool_calls=[],
                    finish_reason="stop", prompt_tokens=14, completion_tokens=n, chunks=n)  # fmt: skip
    return b"".join(wire_anthropic.stream_events(answer))


def started(done: list[Completion] | None = None) -> ProviderTry:
    t = TryStage(CFG, [done.append] if done is not None else []).start_try(dict(META), "provider.ant", 1)
    mode, _ = t.response_headers(200, {":status": "200", "content-type": "text/event-stream"})
    assert mode == "streamed" and t.sse_in
    return t


def events(client: bytes) -> list[Any]:
    """The client's events, without the per-answer id and timestamp (each try makes its own)."""
    out = []
    for block in client.split(b"\n\n"):
        if block.startswith(b"data: {"):
            ev = orjson.loads(block[6:])
            ev.pop("id", None)
            ev.pop("created", None)
            out.append(ev)
        elif block:
            out.append(block)
    return out


def test_a_bursts_first_event_is_answered_alone_then_the_rest_of_the_read() -> None:
    body = burst(200)
    whole = started().response_chunk(body, True)
    done: list[Completion] = []
    t = started(done)
    parts = t.response_parts(body, True)
    first = next(parts)
    assert first.startswith(b"data: ") and first.count(b"\n\n") == 1  # the role event, alone
    assert not t.done and t.first_byte_at  # the rest is not translated yet
    rest = list(parts)
    assert len(rest) == 1 and t.done
    assert events(first + rest[0]) == events(whole)
    assert rest[0].endswith(b"data: [DONE]\n\n")
    assert len(done) == 1 and done[0].usage is not None  # settled once, with the stream's usage


def test_a_short_answer_in_one_read_stays_one_part() -> None:
    t = started()
    assert len(list(t.response_parts(burst(6), True))) == 1 and t.done


def test_once_bytes_went_out_a_chunk_is_one_part() -> None:
    body = burst(60)
    cut = len(body) // 2
    t = started()
    assert len(list(t.response_parts(body[:cut], False))) == 2
    later = list(t.response_parts(body[cut:], True))
    assert len(later) == 1 and later[0].endswith(b"data: [DONE]\n\n")


def test_a_chunk_with_no_whole_event_or_a_binary_stream_is_not_split() -> None:
    t = started()
    assert len(list(t.response_parts(b"event: message_start\ndata: {", False))) == 1
    bedrock = TryStage(CFG).start_try(dict(META), "provider.ant", 1)
    bedrock.response_headers(200, {":status": "200", "content-type": "application/vnd.amazon.eventstream"})
    assert not bedrock.sse_in


def _body(chunk: bytes, end: bool) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(response_body=pb.HttpBody(body=chunk, end_of_stream=end))


def _sent(answer: Any) -> list[tuple[bytes, bool]]:
    assert not isinstance(answer, pb.ProcessingResponse)
    out = []
    for r in answer:
        if r is None:  # the flush between two parts
            continue
        s = r.response_body.response.body_mutation.streamed_response
        out.append((s.body, s.end_of_stream))
    return out


def test_the_adapter_sends_each_part_as_a_full_duplex_body_response() -> None:
    body = burst(50)
    stream = UpstreamStream(TryStage(CFG))
    stream.try_ = started()
    answer = asyncio.run(stream.handle(_body(body[:-10], False)))
    assert not isinstance(answer, pb.ProcessingResponse)
    series = list(answer)
    assert series[1] is None  # the event loop gets a turn between the first event and the rest
    sent = _sent(iter(series))
    assert len(sent) == 2 and not any(end for _, end in sent) and all(b for b, _ in sent)
    # a read that ends no event gives nothing to send: no answer at all (full duplex)
    assert _sent(asyncio.run(stream.handle(_body(body[-10:-5], False)))) == []
    last = _sent(asyncio.run(stream.handle(_body(body[-5:], True))))
    assert len(last) == 1 and last[0][1] and last[0][0].endswith(b"data: [DONE]\n\n")
    # the end with nothing left to send still ends the client's body
    other = UpstreamStream(TryStage(CFG))
    other.try_ = started()
    _sent(asyncio.run(other.handle(_body(body, False))))
    assert _sent(asyncio.run(other.handle(_body(b"", True)))) == [(b"", True)]


def test_trailers_end_the_body_then_pass() -> None:
    stream = UpstreamStream(TryStage(CFG))
    stream.try_ = started()
    _sent(asyncio.run(stream.handle(_body(burst(5), False))))
    answer = asyncio.run(stream.handle(pb.ProcessingRequest(response_trailers=pb.HttpTrailers())))
    assert not isinstance(answer, pb.ProcessingResponse)
    sent = [r for r in answer if r is not None]
    assert sent[0].response_body.response.body_mutation.streamed_response.end_of_stream is False
    assert sent[1].WhichOneof("response") == "response_trailers" and stream.try_.done
