"""What the Bedrock e2e module shares with its fixtures: test AWS keys, the shared credentials file
the gateway's AWS chain reads, and the quota usage of a tenant."""

from __future__ import annotations

import time
from pathlib import Path

from fault_helpers import tenant_usage
from harness import Stack

AKID, SECRET = "AKIDE2EBEDROCK000001", "e2e/bedrock+SECRET00000000000000000000001"
AKID2, SECRET2 = "AKIDE2EBEDROCK000002", "e2e/bedrock+SECRET00000000000000000000002"
MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"
"""A Bedrock model id with its `:` (quoted in the path: the signature must cover the same bytes)."""
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def write_credentials(aws_dir: Path, akid: str, secret: str, *, wrong: str) -> None:
    """The shared credentials file: `default` with these keys, `wrong` with the same key id and a
    wrong secret. Written whole then renamed, as a rotation tool would (no half-read file)."""
    tmp = aws_dir / "credentials.tmp"
    tmp.write_text(
        f"[default]\naws_access_key_id = {akid}\naws_secret_access_key = {secret}\n\n"
        f"[wrong]\naws_access_key_id = {akid}\naws_secret_access_key = {wrong}\n"
    )
    tmp.replace(aws_dir / "credentials")


def _tokens(gw: Stack, tenant: str) -> int:
    return int(tenant_usage(gw, tenant)["tokens"])


def tokens(gw: Stack, tenant: str, expect: int | None = None, timeout_s: float = 5.0) -> int:
    """The tenant's tokens in its quota window (waiting up to `timeout_s` for `expect`: true-ups
    are asynchronous)."""
    deadline = time.monotonic() + timeout_s
    got = _tokens(gw, tenant)
    while expect is not None and got != expect and time.monotonic() < deadline:
        time.sleep(0.05)
        got = _tokens(gw, tenant)
    return got
