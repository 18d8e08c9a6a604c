"""The direct lane's stream watch (lua/envoy_stream_watch.lua): a Lua function of the router-level
error filter (lua/envoy_direct_errors.lua, sidegate/bootstrap/direct_lane.py) that does to a
direct-lane SSE stream, in Envoy, what the passthrough stream translators do in the full lane
(sidegate/translate/openai_openai.py, anthropic_anthropic.py, responses_responses.py):

- only complete lines are relayed (an unfinished last line is held back to the next chunk), so a
  stream never hands the client half an event;
- a `data:` line whose payload does not look like a JSON object (`{...}`, the same cheap structural
  check as the passthrough translators, no parse), nor `[DONE]`, nor empty, ends the stream: the
  chunk is cut before it, a terminal error event in the client's format is appended, and whatever
  the provider sends after is dropped;
- the terminal event (OpenAI `data: [DONE]` or an error object; Anthropic an `event: message_stop`
  or `event: error` line; Responses `event: response.completed`, `response.failed`,
  `response.incomplete` or `error`: a text delta that quotes one is payload) is relayed whole, up to its
  empty line (an SSE parser dispatches nothing without it), and nothing after it;
- a stream that ends without its terminal event gets the "ended before the response was
  complete" error event appended to its last chunk;
- a Responses client's error event is the full lane's (`event: error`, flat with a nested
  `error`, sidegate/translate/responses_responses.py), its `sequence_number` the count of the
  events relayed before it (the watch counts the sound `data:` lines it scans anyway). A Responses
  client's watch is picked from the gateway's metadata (`api`), since its provider's own entry
  may be `api: openai` (an OpenAI provider serving both APIs);
- the provider's key (`key`, when it has one) is scrubbed from the complete lines it relays (a
  key has no newline, so one never straddles what is relayed and what is held back);
- the outcome (`complete`, `malformed`, `cut`) and the time of the first body chunk go into the
  `sidegate.stream` metadata, read by the access-log adapter (extproc/direct.py): a stream whose
  terminal event was relayed is not `aborted` even if the client closed before Envoy saw the
  provider's end, and the first chunk's time is the stream's time to first token.

An upstream reset mid-stream gives the filter no last word (Envoy resets the client's stream):
that stays a connection error.
"""

from __future__ import annotations

import string

from sidegate import lua
from sidegate.errors import Api
from sidegate.translate.common import MALFORMED_EVENT, STREAM_TRUNCATED, sse_error_event
from sidegate.translate.responses_responses import responses_error_event
from sidegate.wire import STREAM_NS, USAGE_NS

SEQ_PLACEHOLDER = "__SIDEGATE_SEQ__"
"""Where the watch writes a Responses error event's `sequence_number` (the events it relayed)."""


def lua_events(api: Api) -> tuple[bytes, bytes]:
    """(malformed, cut): the terminal error events the watch appends for a client of `api`; a
    Responses client gets the full lane's (`event: error`, numbered in the stream)."""
    if api is Api.RESPONSES:
        seq = b'"sequence_number":' + SEQ_PLACEHOLDER.encode()
        malformed, cut = (responses_error_event(m, 0).replace(b'"sequence_number":0', seq) for m in (MALFORMED_EVENT, STREAM_TRUNCATED))
        return malformed, cut
    etype = "api_error" if api is Api.ANTHROPIC else "server_error"
    return sse_error_event(api, MALFORMED_EVENT, etype), sse_error_event(api, STREAM_TRUNCATED, etype)


TERMINAL_EVENTS = {
    Api.ANTHROPIC: ("message_stop", "error"),
    Api.RESPONSES: ("response.completed", "response.failed", "response.incomplete", "error"),
}
"""The `event:` names that end a stream, by client API (OpenAI chat ends with `data: [DONE]` or an
error object, which the watch reads from the `data:` lines instead)."""


def lua_terms(api: Api) -> str:
    """The watch's terminal `event:` lines for a client of `api`, as a Lua table (nil for OpenAI chat)."""
    names = TERMINAL_EVENTS.get(api)
    return "nil" if names is None else "{" + ", ".join(f'"event: {n}"' for n in names) + "}"


def stream_watch() -> str:
    """The watch's Lua (lua/envoy_stream_watch.lua), to fill in the error filter's `${stream_watch}`
    line: without its last newline, which that line has."""
    return string.Template(lua.read("envoy_stream_watch.lua")).substitute(stream_ns=STREAM_NS, usage_ns=USAGE_NS, seq_placeholder=SEQ_PLACEHOLDER).removesuffix("\n")
