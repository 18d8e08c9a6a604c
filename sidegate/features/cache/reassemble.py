"""Rebuild the complete non-streaming JSON response from a whole SSE stream (for the cache fill).

Returns None when the stream is not a complete success (cut short, error event, unparsable), so only
finished answers get stored.
"""

from __future__ import annotations

from typing import Any

import orjson

from sidegate.errors import Api
from sidegate.sse import SseParser

from .gemini_answer import reassemble_gemini
from .responses_answer import reassemble_responses

__all__ = ["reassemble", "reassemble_anthropic", "reassemble_openai"]


def reassemble(api: Api, stream: bytes) -> dict[str, Any] | None:
    if api is Api.RESPONSES:
        return reassemble_responses(stream)
    if api is Api.GEMINI:
        return reassemble_gemini(stream)
    return reassemble_anthropic(stream) if api is Api.ANTHROPIC else reassemble_openai(stream)


def reassemble_openai(stream: bytes) -> dict[str, Any] | None:
    parser = SseParser()
    head: dict[str, Any] = {}
    usage: Any = None
    choices: dict[int, dict[str, Any]] = {}
    done = False
    try:
        for ev in parser.feed(stream if stream.endswith(b"\n\n") else stream + b"\n\n"):
            if ev.data == b"[DONE]":
                done = True
                break
            chunk = orjson.loads(ev.data)
            if not isinstance(chunk, dict) or "error" in chunk:
                return None
            for k in ("id", "created", "model", "system_fingerprint", "service_tier"):
                if chunk.get(k) is not None:
                    head.setdefault(k, chunk[k])
            if chunk.get("usage"):
                usage = chunk["usage"]
            for c in chunk.get("choices") or []:
                st = choices.setdefault(
                    c.get("index", 0),
                    {"role": None, "content": [], "refusal": [], "tools": {}, "fc": None, "finish": None},
                )
                delta = c.get("delta") or {}
                if delta.get("role"):
                    st["role"] = delta["role"]
                if delta.get("content"):
                    st["content"].append(delta["content"])
                if delta.get("refusal"):
                    st["refusal"].append(delta["refusal"])
                for tc in delta.get("tool_calls") or []:
                    t = st["tools"].setdefault(
                        tc.get("index", 0), {"id": None, "type": "function", "name": "", "args": []}
                    )
                    if tc.get("id"):
                        t["id"] = tc["id"]
                    if tc.get("type"):
                        t["type"] = tc["type"]
                    fn = tc.get("function") or {}
                    if fn.get("name"):
                        t["name"] += fn["name"]
                    if fn.get("arguments"):
                        t["args"].append(fn["arguments"])
                if delta.get("function_call"):
                    fc = st["fc"] = st["fc"] or {"name": "", "arguments": ""}
                    fc["name"] += delta["function_call"].get("name") or ""
                    fc["arguments"] += delta["function_call"].get("arguments") or ""
                if c.get("finish_reason"):
                    st["finish"] = c["finish_reason"]
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        return None
    if not done or not choices or any(st["finish"] is None for st in choices.values()):
        return None
    out_choices = []
    for index in sorted(choices):
        st = choices[index]
        msg: dict[str, Any] = {
            "role": st["role"] or "assistant",
            "content": "".join(st["content"]) if st["content"] or not (st["tools"] or st["fc"]) else None,
            "refusal": "".join(st["refusal"]) if st["refusal"] else None,
        }
        if st["tools"]:
            msg["tool_calls"] = [
                {
                    "id": t["id"],
                    "type": t["type"],
                    "function": {"name": t["name"], "arguments": "".join(t["args"])},
                }
                for _, t in sorted(st["tools"].items())
            ]
        if st["fc"]:
            msg["function_call"] = st["fc"]
        out_choices.append({"index": index, "message": msg, "logprobs": None, "finish_reason": st["finish"]})
    out: dict[str, Any] = {
        "id": head.get("id"),
        "object": "chat.completion",
        "created": head.get("created"),
        "model": head.get("model"),
        "choices": out_choices,
    }
    for k in ("system_fingerprint", "service_tier"):
        if k in head:
            out[k] = head[k]
    if usage is not None:
        out["usage"] = usage
    return out


def reassemble_anthropic(stream: bytes) -> dict[str, Any] | None:
    parser = SseParser()
    message: dict[str, Any] | None = None
    blocks: dict[int, dict[str, Any]] = {}
    partial: dict[int, list[str]] = {}
    stopped = False
    try:
        for ev in parser.feed(stream if stream.endswith(b"\n\n") else stream + b"\n\n"):
            data = orjson.loads(ev.data)
            etype = data.get("type") if isinstance(data, dict) else None
            if etype == "error" or ev.event == "error":
                return None
            if etype == "message_start":
                message = dict(data["message"])
                message["usage"] = dict(message.get("usage") or {})
            elif message is None:
                continue  # ping before message_start
            elif etype == "content_block_start":
                block = dict(data["content_block"])
                if block.get("type") in ("tool_use", "server_tool_use"):
                    partial[data["index"]] = []
                blocks[data["index"]] = block
            elif etype == "content_block_delta":
                block = blocks[data["index"]]
                delta = data["delta"]
                dtype = delta.get("type")
                if dtype == "text_delta":
                    block["text"] = block.get("text", "") + delta["text"]
                elif dtype == "input_json_delta":
                    partial.setdefault(data["index"], []).append(delta.get("partial_json", ""))
                elif dtype == "thinking_delta":
                    block["thinking"] = block.get("thinking", "") + delta["thinking"]
                elif dtype == "signature_delta":
                    block["signature"] = block.get("signature", "") + delta["signature"]
                elif dtype == "citations_delta":
                    block.setdefault("citations", []).append(delta["citation"])
            elif etype == "content_block_stop":
                idx = data["index"]
                if idx in partial:
                    raw = "".join(partial.pop(idx))
                    blocks[idx]["input"] = orjson.loads(raw) if raw else {}
            elif etype == "message_delta":
                for k, v in (data.get("delta") or {}).items():
                    message[k] = v
                for k, v in (data.get("usage") or {}).items():
                    if v is not None:
                        message["usage"][k] = v
            elif etype == "message_stop":
                stopped = True
                break
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return None
    if message is None or not stopped or partial or message.get("stop_reason") is None:
        return None
    message["content"] = [blocks[i] for i in sorted(blocks)]
    return message
