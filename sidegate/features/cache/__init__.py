"""Response cache (exact + semantic) for the extproc pipeline. See docs/cache.md."""

from sidegate.config.cache import CachePolicy, SemanticSettings

from .cacheable import refusal_reason
from .core import CacheHit, ResponseCache
from .embedder import Embedder, EmbedderUnavailable, ensure_model_dir
from .index import SemanticIndex, SemanticMatch
from .reassemble import reassemble, reassemble_anthropic, reassemble_openai
from .replay import json_answer, replay_answer, sse_answer
from .request import CacheRequest
from .stats import CacheStats

__all__ = [
    "CacheHit",
    "CachePolicy",
    "CacheRequest",
    "CacheStats",
    "Embedder",
    "EmbedderUnavailable",
    "ResponseCache",
    "SemanticIndex",
    "SemanticMatch",
    "SemanticSettings",
    "ensure_model_dir",
    "json_answer",
    "reassemble",
    "reassemble_anthropic",
    "reassemble_openai",
    "refusal_reason",
    "replay_answer",
    "sse_answer",
]
