"""A Gemini request's `cachedContent` names content stored on Google's side (a system instruction,
tools, the leading turns) that the request itself no longer carries: it is part of the prompt, so
two requests that differ only in it must not share a cache entry (one would be answered with the
other's answer)."""

from __future__ import annotations

from sidegate.core.intake import COMPLETIONS
from sidegate.errors import Api
from sidegate.features.cache.request import CacheRequest


def _key(body: dict) -> str:
    return CacheRequest.from_body(Api.GEMINI, "t", "gemini-flash", body, {}, COMPLETIONS, False).exact_key


def test_cached_content_is_part_of_the_key() -> None:
    question = {"contents": [{"role": "user", "parts": [{"text": "What does chapter 3 say?"}]}]}
    book_a = _key({**question, "cachedContent": "cachedContents/book-a"})
    book_b = _key({**question, "cachedContent": "cachedContents/book-b"})
    assert book_a != book_b and book_a != _key(question)
    assert _key({**question, "cached_content": "cachedContents/book-a"}) != _key(question)
