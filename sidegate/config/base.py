"""What every configuration section shares: strict models (an unknown key is an error) and names."""

from __future__ import annotations

import functools
import re
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


@functools.lru_cache(maxsize=256)
def url_parts(url: str) -> tuple[bool, str, int]:
    """A provider URL's (tls, host, port), parsed once per URL (the try path asks per request)."""
    parts = urlsplit(url)
    tls = parts.scheme == "https"
    return tls, parts.hostname or "", parts.port or (443 if tls else 80)


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


