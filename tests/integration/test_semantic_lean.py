"""The lean int8 graph (sidegate/features/cache/lean_graph.py) with the real model: it is what the
embedder loads by default, its vectors stay close to the fp32 graph's, and a graph of another layout
falls back to the generic int8 graph instead of failing."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cache_helpers import shared_embedder

from sidegate.features.cache.embedder import INT8_FILE, LEAN_FILE, ONNX_FILE, Embedder, int8_model
from sidegate.features.cache.lean_graph import Unsupported, build_lean
from sidegate.features.cache.vectors import NumpyStore

TEXTS = (
    "What is the capital of France?",
    "How do I convert a string to an integer in Python?",
    "Is it safe to eat raw eggs?",
    "Explain the difference between TCP and UDP in networking, with an example of when to use each one.",
)


def test_the_default_embedder_runs_the_lean_graph_close_to_fp32() -> None:
    lean = shared_embedder()
    assert lean.model_file is not None and lean.model_file.name == LEAN_FILE
    fp32 = Embedder(lean.model_file.parent, int8_compute=False)
    for a, b in zip(lean.embed(list(TEXTS)), fp32.embed(list(TEXTS)), strict=True):
        assert abs(float(np.linalg.norm(a)) - 1.0) < 1e-5
        assert float(np.dot(a, b)) > 0.9  # int8 products: the set's pairs measure 0.93-1.00
    # One text's vector does not depend on its companions (one run per text).
    assert lean.embed([TEXTS[0]])[0] == lean.embed([TEXTS[1], TEXTS[0]])[1]


def test_another_graph_layout_keeps_the_generic_int8_graph(tmp_path: Path) -> None:
    """A graph without BERT's named weights: the lean build refuses, int8_model() makes the generic one."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    b = numpy_helper.from_array(np.zeros(4, dtype=np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Add", ["y", "b"], ["z"])],
        "other",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4])],
        [w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(tmp_path / ONNX_FILE))
    (tmp_path / "config.json").write_text(
        '{"num_attention_heads": 1, "hidden_size": 4, "num_hidden_layers": 1}'
    )
    with pytest.raises(Unsupported):
        build_lean(
            tmp_path / ONNX_FILE, tmp_path / "config.json", tmp_path / "out.onnx", tmp_path / "work.onnx"
        )
    assert int8_model(tmp_path) == tmp_path / INT8_FILE
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([ONNX_FILE, "config.json", INT8_FILE])


def test_memory_store_search_skips_expired_and_vetoed_rows() -> None:
    store = NumpyStore()
    v = np.zeros(384, dtype=np.float32)
    v[0] = 1.0
    near = v.copy()
    near[1] = 0.1
    near /= np.linalg.norm(near)
    store.upsert("s", "a" * 32, v.tolist(), expires_at=10.0, tag="old")
    store.upsert("s", "b" * 32, near.tolist(), expires_at=100.0, tag="vetoed")
    store.upsert("s", "c" * 32, near.tolist(), expires_at=100.0, tag="ok")
    assert store.query("s", v.tolist(), 0.9, now=5.0) == ("a" * 32, pytest.approx(1.0))
    assert store.query("s", v.tolist(), 0.9, now=50.0, accept=lambda t: t == "ok") == (
        "c" * 32,
        pytest.approx(0.995, abs=1e-3),
    )
    assert store.query("s", v.tolist(), 0.999, now=50.0) is None  # the exact match expired
    assert store.cleanup(now=50.0) == 1 and store.count() == 2
    assert store.query("s", v.tolist(), 0.9, now=50.0, accept=lambda t: t == "ok")[0] == "c" * 32
