"""The quota's reservation bound of a Gemini client's request: google-genai and Google's JSON both
spell the config in snake_case too (`generation_config.max_output_tokens`), which the translators
honour, so the reservation must too; and a `generationConfig` field in another API's body is no
Gemini config (it must not hide that body's own `max_tokens` x `n`)."""

from __future__ import annotations

from sidegate.errors import Api
from sidegate.features.quota.tokens import max_output_tokens


def test_gemini_config_in_either_spelling() -> None:
    camel = {"generationConfig": {"maxOutputTokens": 100, "candidateCount": 2}}
    snake = {"generation_config": {"max_output_tokens": 100, "candidate_count": 2}}
    assert max_output_tokens(camel, 7, Api.GEMINI) == 200
    assert max_output_tokens(snake, 7, Api.GEMINI) == 200
    assert max_output_tokens({"contents": []}, 7, Api.GEMINI) == 7


def test_a_generation_config_field_in_an_openai_body_changes_nothing() -> None:
    body = {"max_tokens": 1000, "n": 4, "generationConfig": {}}
    assert max_output_tokens(body, 7, Api.OPENAI) == 4000
