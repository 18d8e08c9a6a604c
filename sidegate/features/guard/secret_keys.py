"""Credentials in text: provider API keys, cloud/GitHub tokens, private key PEM blocks and JWTs.

Each pattern is gated by a literal that must occur in the text, so clean text costs a few substring
searches.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterator

import orjson


def _random_looking(token: str) -> bool:
    """Real keys are random: digits and both letter cases. Rules out `sk-learn-compatible-wrapper`."""
    return (
        any(c.isdigit() for c in token)
        and any(c.isupper() for c in token)
        and any(c.islower() for c in token)
    )


def _jwt(token: str) -> bool:
    head = token.split(".", 1)[0]
    try:
        obj = orjson.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        return False
    return isinstance(obj, dict) and ("alg" in obj or "typ" in obj)


def _always(_: str) -> bool:
    return True


# (gate literal, pattern, validator). Patterns start with their literal (so the regex engine scans for it
# quickly) and check the character before it with a lookbehind placed after it.
_RULES: tuple[tuple[str, re.Pattern[str], Callable[[str], bool]], ...] = (
    # OpenAI (sk-, sk-proj-, sk-svcacct-, sk-admin-) and Anthropic (sk-ant-api03-, sk-ant-admin01-).
    ("sk-", re.compile(r"sk-(?<![\w-]sk-)[A-Za-z0-9_\-]{20,256}(?![\w-])"), _random_looking),
    ("k_", re.compile(r"[sr]k_(?<![\w-][sr]k_)(?:live|test)_[A-Za-z0-9]{16,256}(?!\w)"), _always),  # Stripe
    ("IA", re.compile(r"A[KS]IA(?<![A-Za-z0-9]A[KS]IA)[A-Z0-9]{16}(?![A-Za-z0-9])"), _always),  # AWS key ids
    ("_", re.compile(r"gh[pousr]_(?<![A-Za-z0-9_]gh[pousr]_)[A-Za-z0-9]{36,255}(?![A-Za-z0-9])"), _always),
    (
        "github_pat_",
        re.compile(r"github_pat_(?<![A-Za-z0-9_]github_pat_)[A-Za-z0-9_]{40,255}(?![A-Za-z0-9_])"),
        _always,
    ),
    ("AIza", re.compile(r"AIza(?<![\w-]AIza)[0-9A-Za-z_\-]{35}(?![\w-])"), _always),  # Google API keys
    ("xox", re.compile(r"xox[abprs]-(?<![\w-]xox[abprs]-)[A-Za-z0-9-]{10,255}(?![\w-])"), _random_looking),
    (
        "-----BEGIN",
        re.compile(
            r"-----BEGIN ([A-Z0-9]+ )*PRIVATE KEY( BLOCK)?-----"
            r"(?:[\s\S]{0,16384}?-----END ([A-Z0-9]+ )*PRIVATE KEY( BLOCK)?-----|[A-Za-z0-9+/=\s\\]{0,16384})"
        ),
        _always,
    ),
    (
        "eyJ",
        re.compile(
            r"eyJ(?<![\w-]eyJ)[A-Za-z0-9_-]{8,4096}\.eyJ[A-Za-z0-9_-]{4,16384}\.[A-Za-z0-9_-]{0,1024}(?![\w-])"
        ),
        _jwt,
    ),
)


def find_secrets(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of every credential in `text`."""
    for gate, pattern, valid in _RULES:
        if gate not in text:
            continue
        for m in pattern.finditer(text):
            if valid(m.group()):
                end = m.end()
                while end > m.start() and text[end - 1].isspace():  # a truncated PEM's trailing blank
                    end -= 1
                yield m.start(), end
