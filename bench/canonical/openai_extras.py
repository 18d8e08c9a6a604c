"""OpenAI Chat Completions parameters the canonical form has no field for, as other APIs see them."""

from __future__ import annotations

from typing import Any

from bench.canonical.util import as_dict, bad_param

# OpenAI parameters the form has no field for, as another API's provider sees them: None = harmless
# (accepted, not forwarded), a tuple = refused unless at one of these no-op values. Which value is a
# no-op is a fact about OpenAI's API, whatever the provider: the table lives here, once.
_EXTRAS: dict[str, tuple[Any, ...] | None] = {
    "store": None,
    "metadata": None,
    "stream_options": None,
    "prompt_cache_key": None,
    "prompt_cache_retention": None,
    "prompt_cache_options": None,
    "n": (None, 1),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "logit_bias": (None, {}),
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "seed": (None,),
    "audio": (None,),
    "modalities": (None, ["text"]),
    "prediction": (None,),
    "web_search_options": (None,),
    "moderation": (None,),
    "verbosity": (None, "medium"),
    "service_tier": (None, "auto", "default"),
    "functions": (None, []),
    "function_call": (None,),
}


def check_extras(extras: dict[str, Any]) -> None:
    """OpenAI parameters outside the form, sent to another API: harmless, no-op, or refused."""
    for key, value in extras.items():
        if key == "response_format":
            kind = as_dict(value).get("type")
            if kind == "json_object":
                raise bad_param(
                    key,
                    "response_format json_object has no upstream equivalent; use json_schema with a schema.",
                )
            raise bad_param(key, f"response_format type {kind!r} is not supported upstream.")
        if key not in _EXTRAS:
            raise bad_param(key, f"Parameter {key!r} is not supported for this model.")
        allowed = _EXTRAS[key]
        if allowed is not None and value not in allowed:
            raise bad_param(
                key, f"Parameter {key!r} is not supported for this model (only its default value is)."
            )
