"""Tenant API keys: format, hashing, constant-time verification.

A key looks like ``sgk_<id>_<secret>``. The id (8 lowercase alphanumerics) is not secret and
selects the record; the whole key is hashed with SHA-256 (HMAC-SHA-256 when a pepper is set in
``SIDEGATE_KEY_PEPPER``) and compared to the stored hash with :func:`hmac.compare_digest`.
Keys carry 256 bits of randomness, so a fast hash is the right tool (no password KDF needed).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import string

PREFIX = "sgk_"
_ID_ALPHABET = string.ascii_lowercase + string.digits
_KEY_RE = re.compile(r"^sgk_([a-z0-9]{8})_([A-Za-z0-9_-]{20,128})$")


def new_key(key_id: str | None = None) -> tuple[str, str]:
    """A fresh key and its id."""
    kid = key_id or "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))
    if not re.fullmatch(r"[a-z0-9]{8}", kid):
        raise ValueError("key id must be 8 lowercase letters or digits")
    return f"{PREFIX}{kid}_{secrets.token_urlsafe(32)}", kid


def key_id(key: str) -> str | None:
    """The id part of a well-formed key, else None."""
    m = _KEY_RE.match(key)
    return m.group(1) if m else None


def hash_key(key: str, pepper: bytes | None = None) -> str:
    if pepper is None:
        pepper = os.environ.get("SIDEGATE_KEY_PEPPER", "").encode() or None
    digest = (
        hmac.new(pepper, key.encode(), hashlib.sha256).hexdigest()
        if pepper
        else hashlib.sha256(key.encode()).hexdigest()
    )
    return f"sha256:{digest}"


def verify(key: str, stored_hash: str, pepper: bytes | None = None) -> bool:
    """Constant-time comparison of ``key``'s hash with ``stored_hash``."""
    return hmac.compare_digest(hash_key(key, pepper).encode(), stored_hash.encode())


def redact(key: str) -> str:
    """A printable form that never reveals the secret part."""
    kid = key_id(key)
    return f"{PREFIX}{kid}_***" if kid else "***"
