"""Test helpers for the AWS Bedrock (Converse) pairs: their golden fixtures, the stream fixtures'
frames, and a validator of Converse JSON against botocore's service model (the authoritative
shapes: ``bedrock-runtime`` ``ConverseRequest``, ``ConverseResponse``, ``ConverseStreamOutput``).

Fixtures: tests/fixtures/translate/<client api>_bedrock/<case>/ as for the other pairs
(tests/fixtures/translate/README.md), but a provider stream is ``stream.json``: the list of
``[event-type, payload]`` that :func:`frames` turns into binary event-stream frames
(``"exception:<type>"`` for an exception frame).
"""

from __future__ import annotations

import base64
import json
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import orjson
import translate_helpers as h

from sidegate.errors import Api
from sidegate.translate.base import Translator
from sidegate.translate.codecs.bedrock.eventstream import encode_event, encode_exception

FIXTURES = Path(__file__).parent / "fixtures" / "translate"
CREATED = 1700000000
DEFAULT_MODEL = "anthropic.claude-sonnet-4-5-20250929-v1:0"
PAIRS: dict[str, Api] = {"openai_bedrock": Api.OPENAI, "anthropic_bedrock": Api.ANTHROPIC}
PAIRS["responses_bedrock"] = Api.RESPONSES
INPUTS = ("request.json", "response.json", "stream.json", "provider_error.json")


class FixedIds:
    """Converse answers carry no id, so the codec makes one (``response.new_id``); tests patch in
    this numbering, restarted by every new translator so each case reads the same."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> str:
        self.n += 1
        return f"msg_bdrk_{self.n:04d}"


IDS = FixedIds()


def cases(kind: str | None = None) -> list[Path]:
    out = sorted(p for pair in PAIRS for p in (FIXTURES / pair).iterdir() if p.is_dir())
    return [p for p in out if kind is None or (p / kind).exists()]


def make_translator(pair: str) -> Translator:
    """A fresh translator with a fixed clock (and fixed ids for a Responses client), its answer
    ids numbered from 1 again."""
    IDS.n = 0
    return h.translator_for(PAIRS[pair], Api.BEDROCK)


# ------------------------------------------------------------------------------------- frames


def frames(events: list[list[Any]]) -> list[bytes]:
    """``[event-type, payload]`` pairs -> event-stream frames, one per event."""
    out = []
    for name, payload in events:
        raw = orjson.dumps(payload)
        if name.startswith("exception:"):
            out.append(encode_exception(name.split(":", 1)[1], raw))
        else:
            out.append(encode_event(name, raw))
    return out


def stream_bytes(case: Path) -> bytes:
    return b"".join(frames(json.loads((case / "stream.json").read_text())))


# --------------------------------------------------------------------------------- validation


@cache
def _model() -> Any:
    import botocore.session

    return botocore.session.get_session().get_service_model("bedrock-runtime")


def shape_enum(name: str) -> list[str]:
    return list(_model().shape_for(name).enum)


def validate(value: Any, shape_name: str, *, strict_strings: bool = True) -> None:
    """``value`` (Converse wire JSON: blobs base64, documents any JSON) conforms to the botocore
    shape: no undeclared key, required members present, a union with exactly one member, enums,
    numeric and length bounds (string lengths only when ``strict_strings``). Raises
    AssertionError naming the path."""
    _check(value, _model().shape_for(shape_name), "$", frozenset(), strict_strings)


def _check(
    value: Any, shape: Any, path: str, extra: frozenset[str] = frozenset(), strict: bool = True
) -> None:
    kind = shape.type_name
    if getattr(shape, "is_document_type", False):
        return
    meta_ = shape.metadata
    if kind == "structure":
        assert isinstance(value, dict), f"{path}: not an object"
        unknown = set(value) - set(shape.members) - extra
        assert not unknown, f"{path}: keys not in {shape.name}: {unknown}"
        for name in shape.required_members:
            assert name in value, f"{path}: {shape.name} lacks {name}"
        if shape.is_tagged_union:
            assert len(set(value) - extra) == 1, f"{path}: union {shape.name} needs one member: {set(value)}"
        for key, item in value.items():
            if key in shape.members:
                _check(item, shape.members[key], f"{path}.{key}", strict=strict)
    elif kind == "list":
        assert isinstance(value, list), f"{path}: not a list"
        assert meta_.get("min", 0) <= len(value) <= meta_.get("max", 1 << 60), f"{path}: list length"
        for i, item in enumerate(value):
            _check(item, shape.member, f"{path}[{i}]", strict=strict)
    elif kind == "map":
        assert isinstance(value, dict), f"{path}: not a map"
    elif kind == "string":
        assert isinstance(value, str), f"{path}: not a string"
        if strict:
            assert meta_.get("min", 0) <= len(value) <= meta_.get("max", 1 << 60), f"{path}: length"
        if shape.enum:
            assert value in shape.enum, f"{path}: {value!r} not in {shape.enum}"
    elif kind == "blob":
        assert isinstance(value, str), f"{path}: a blob is base64 text on the wire"
        if strict:  # a client's own base64 (an image, a PDF) is relayed, not re-decoded: Bedrock's 400 judges it
            base64.b64decode(value, validate=True)
    elif kind in ("integer", "long"):
        assert isinstance(value, int) and not isinstance(value, bool), f"{path}: not an integer"
        assert meta_.get("min", -(1 << 63)) <= value <= meta_.get("max", 1 << 63), f"{path}: bounds"
    elif kind in ("float", "double"):
        assert isinstance(value, int | float) and not isinstance(value, bool), f"{path}: not a number"
        assert meta_.get("min", float("-inf")) <= value <= meta_.get("max", float("inf")), f"{path}: bounds"
    elif kind == "boolean":
        assert isinstance(value, bool), f"{path}: not a boolean"


def validate_request(path: str, body: dict[str, Any], *, strict_strings: bool = True) -> None:
    """A translated request: its path is Converse's (the model id quoted whole) and its body
    conforms to ConverseRequest / ConverseStreamRequest (the model travels in the path only)."""
    prefix, _, rest = path.partition("/model/")
    assert prefix == "" and "/" in rest, path
    model_id, _, action = rest.rpartition("/")
    assert action in ("converse", "converse-stream") and "/" not in model_id and unquote(model_id), path
    assert "modelId" not in body
    shape = "ConverseStreamRequest" if action == "converse-stream" else "ConverseRequest"
    validate({**body, "modelId": unquote(model_id)}, shape, strict_strings=strict_strings)


def _blobs_to_bytes(value: Any) -> Any:
    """Wire JSON -> boto3 parameters: a ``source.bytes`` blob is base64 on the wire, bytes in boto3."""
    if isinstance(value, list):
        return [_blobs_to_bytes(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        if key == "source" and isinstance(item, dict) and isinstance(item.get("bytes"), str):
            out[key] = {**item, "bytes": base64.b64decode(item["bytes"])}
        elif key in ("input", "json", "additionalModelRequestFields"):
            out[key] = item  # documents: any JSON, untouched
        else:
            out[key] = _blobs_to_bytes(item)
    return out


def botocore_request(
    path: str, body: dict[str, Any], *, validation: bool = True
) -> tuple[str, dict[str, Any]]:
    """What boto3 itself sends for the same call: (path, JSON body) from botocore's rest-json
    serializer (with its parameter validation unless told), given the model id our path names."""
    from botocore.serialize import create_serializer

    model_id, _, action = path.removeprefix("/model/").rpartition("/")
    operation = _model().operation_model("ConverseStream" if action == "converse-stream" else "Converse")
    params = {"modelId": unquote(model_id), **_blobs_to_bytes(body)}
    request = create_serializer("rest-json", include_validation=validation).serialize_to_request(
        params, operation
    )
    return request["url_path"], json.loads(request["body"])


_PAD = frozenset({"p"})  # Bedrock pads every stream event payload with a "p" field


def validate_stream_events(events: list[list[Any]]) -> None:
    """Every event of a stream fixture conforms to its ConverseStreamOutput member shape."""
    members = _model().shape_for("ConverseStreamOutput").members
    for name, payload in events:
        member = name.split(":", 1)[1] if name.startswith("exception:") else name
        assert member in members, name
        _check(payload, members[member], f"${name}", _PAD)
