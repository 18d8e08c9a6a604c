"""Stored value format: 1 byte kind + 8 byte stored-at (unix seconds, double) + JSON (zlib if big)."""

from __future__ import annotations

import struct
import zlib

_HEAD = struct.Struct("!cd")
_RAW = b"J"
_ZLIB = b"Z"
COMPRESS_ABOVE = 1024


def encode(response_json: bytes, stored_at: float) -> bytes:
    if len(response_json) > COMPRESS_ABOVE:
        packed = zlib.compress(response_json, 1)
        if len(packed) < len(response_json):
            return _HEAD.pack(_ZLIB, stored_at) + packed
    return _HEAD.pack(_RAW, stored_at) + response_json


def decode(value: bytes) -> tuple[bytes, float]:
    """(response JSON, stored_at); raises ValueError on a value this version did not write."""
    if len(value) < _HEAD.size:
        raise ValueError("short cache value")
    kind, stored_at = _HEAD.unpack_from(value)
    body = value[_HEAD.size :]
    if kind == _RAW:
        return body, stored_at
    if kind == _ZLIB:
        try:
            return zlib.decompress(body), stored_at
        except zlib.error as exc:
            raise ValueError("corrupt cache value") from exc
    raise ValueError("unknown cache value kind")
