"""What an OpenAI Chat Completions client may send to a provider of another API: the parameter
policy (mapped, harmless, refused unless at its no-op value) and the validation of the content
parts the form has a place for. Mapping table: docs/translation.md, "OpenAI client -> Anthropic
provider".

Kept apart from :mod:`.request` so the policy reads as one table, the way the docs present it.
"""

from __future__ import annotations

from typing import Any

from sidegate.translate.codecs.form import Document, Image, ToolChoice
from sidegate.translate.common import as_dict, bad_param, need_str

__all__ = [
    "MAPPED",
    "check_extras",
    "check_params",
    "decode_file",
    "decode_image_url",
    "response_schema",
    "text_of",
    "tool_choice",
]

# Parameters that do not change what the model generates: accepted and not forwarded.
HARMLESS = frozenset(
    {
        "model",
        "messages",
        "store",
        "metadata",
        "stream_options",
        "prompt_cache_key",
        "prompt_cache_retention",
        "prompt_cache_options",
    }
)
# Parameters refused unless they hold their no-op value (the value that changes nothing).
NOOP_VALUES: dict[str, tuple[Any, ...]] = {
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
# Parameters the canonical form has a field for.
MAPPED = frozenset(
    {
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "reasoning_effort",
        "user",
        "safety_identifier",
        "stream",
    }
)

_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})


def check_params(body: dict[str, Any]) -> None:
    """Every OpenAI parameter is mapped, harmless, or at its no-op value; else a 400 naming it."""
    for key, value in body.items():
        if key in MAPPED or key in HARMLESS:
            continue
        allowed = NOOP_VALUES.get(key)
        if allowed is None:
            raise bad_param(key, f"Parameter {key!r} is not supported for this model.")
        if value not in allowed:
            raise bad_param(
                key, f"Parameter {key!r} is not supported for this model (only its default value is)."
            )


def check_extras(extras: dict[str, Any]) -> None:
    """The form's ``check_extras`` for OpenAI clients: OpenAI parameters outside the form, sent to
    another API, key by key so the first offender is the one named."""
    for key, value in extras.items():
        if key == "response_format":
            response_schema(value)  # only the kinds without a schema reach extras: this raises
        else:
            check_params({key: value})


def text_of(content: Any, where: str) -> str:
    """Text of a system/developer/tool content (string or text parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise bad_param("messages", f"{where} content part type {kind!r} is not supported upstream.")
            parts.append(need_str(part.get("text", ""), "messages", f"{where} text"))
        return "".join(parts)
    if content is None:
        return ""
    raise bad_param("messages", f"{where} content must be a string or a list of text parts.")


def _data_url(url: str, where: str) -> tuple[str, str]:
    """(media_type, base64 data) of a ``data:<type>;base64,<data>`` URL."""
    head, sep, data = url.partition(",")
    if not sep or not head.endswith(";base64"):
        raise bad_param("messages", f"{where}: only base64 data URLs are supported.")
    return head[5:-7].lower(), data


def decode_image_url(part: dict[str, Any]) -> Image:
    """An ``image_url`` part: a base64 data URL of a type every provider takes, or an http(s) URL."""
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise bad_param("messages", "image_url part without a url.")
    if url.startswith("data:"):
        media_type, data = _data_url(url, "image_url")
        if media_type not in _IMAGE_TYPES:
            raise bad_param("messages", f"image type {media_type!r} is not supported (jpeg, png, gif, webp).")
        return Image(media_type=media_type, data=data)
    if url.startswith(("https://", "http://")):
        return Image(url=url)
    raise bad_param("messages", "image_url must be an https URL or a base64 data URL.")


def decode_file(part: dict[str, Any]) -> Document:
    """A ``file`` part with inline PDF data (a ``file_id`` names OpenAI storage no other API reads)."""
    file = part.get("file")
    data_url = file.get("file_data") if isinstance(file, dict) else None
    if not isinstance(data_url, str):
        raise bad_param("messages", "file parts must carry file_data (file_id cannot be resolved upstream).")
    if not data_url.startswith("data:"):  # OpenAI also accepts bare base64: assume PDF as it does
        data_url = "data:application/pdf;base64," + data_url
    media_type, data = _data_url(data_url, "file")
    if media_type != "application/pdf":
        raise bad_param("messages", f"file type {media_type!r} is not supported upstream (PDF only).")
    return Document(media_type, data)


def tool_choice(choice: Any) -> ToolChoice:
    """OpenAI ``tool_choice`` in the form's words (``required`` is "any tool must be called")."""
    if choice == "auto":
        return ToolChoice("auto")
    if choice == "none":
        return ToolChoice("none")
    if choice == "required":
        return ToolChoice("any")
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = as_dict(choice.get("function")).get("name")
        if isinstance(name, str):
            return ToolChoice("tool", name)
    raise bad_param("tool_choice", f"tool_choice {choice!r} is not supported upstream.")


def response_schema(fmt: Any) -> dict[str, Any] | None:
    """The JSON schema a ``response_format`` asks for (None for plain text). ``json_object`` asks for
    JSON without a schema, which no other API can promise: refused rather than silently weakened."""
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_schema":
        schema = as_dict(fmt.get("json_schema")).get("schema")
        if not isinstance(schema, dict):
            raise bad_param("response_format", "response_format json_schema needs a schema object.")
        return schema
    if kind == "json_object":
        raise bad_param(
            "response_format",
            "response_format json_object has no upstream equivalent; use json_schema with a schema.",
        )
    raise bad_param("response_format", f"response_format type {kind!r} is not supported upstream.")
