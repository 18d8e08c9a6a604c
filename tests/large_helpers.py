"""What the large-body e2e modules share: answer text whose every byte counts, its digest, and SDK
clients with a timeout long enough for tens of MiB."""

from __future__ import annotations

import hashlib

import anthropic
import openai
from harness import Stack


def varied_text(n: int) -> str:
    """n characters that are not all alike (a truncated or reordered body changes the hash)."""
    block = "".join(chr(ord("a") + i % 26) for i in range(1000)) + "\n"
    return (block * (n // len(block) + 1))[:n]


def digest(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def oai(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url + "/v1", api_key=stack.keys["acme"].key, max_retries=0, timeout=60)


def ant(stack: Stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.base_url, api_key=stack.keys["acme"].key, max_retries=0, timeout=60)
