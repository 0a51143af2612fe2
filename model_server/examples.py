"""Example models, built with the ``onnx`` helper API from seeded numpy, no downloads.

- ``tabular`` versions 1, 2, 3: an 8-feature, 3-class classifier (``features`` FP32 [-1, 8]
  -> ``probabilities`` FP32 [-1, 3], ``label`` INT64 [-1]). Each version is a small random-
  feature network whose output layer is fitted by least squares to synthetic clustered
  data: v2 is refitted on a fresh sample (it agrees with v1 on most rows), v3 on a small,
  noisy sample (a candidate that disagrees more). ``tabular/train.npy`` holds v1's
  training features, the natural drift reference.
- ``heavy``: a wide MLP (``x`` FP32 [-1, 512] -> three 8192-wide layers -> ``y`` FP32
  [-1, 16], 553 MB) whose batch-1 run is bound by reading its weights, the case dynamic
  batching exists for. Benchmarks use it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["make_examples", "tabular_model", "heavy_model", "tabular_data", "FEATURES", "CLASSES", "HEAVY_INPUTS", "HEAVY_WIDTH"]

FEATURES = 8
CLASSES = 3
_HIDDEN = 32
HEAVY_INPUTS = 512
# Wide enough that a row costs ~2 ms of CPU at the best batch size (so per-request protocol
# work is a small share on a small CPU box), and that batch 1 is bound by reading ~550 MB
# of weights: the case dynamic batching exists for.
HEAVY_WIDTH = 8192
_OPSET = 17
_IR_VERSION = 9  # what ONNX Runtime 1.17+ reads; newer onnx writes newer by default


def tabular_data(seed: int, rows: int, label_noise: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Rows from three Gaussian clusters (fixed centres) and their class labels."""
    centres = np.random.default_rng(0).normal(0.0, 1.5, size=(CLASSES, FEATURES))
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, size=rows)
    x = centres[labels] + rng.normal(0.0, 1.0, size=(rows, FEATURES))
    if label_noise:
        flip = rng.random(rows) < label_noise
        labels = np.where(flip, rng.integers(0, CLASSES, size=rows), labels)
    return x.astype(np.float32), labels


def _fit(seed: int, rows: int, label_noise: float, jitter: float) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(1)
    w1 = rng.normal(0.0, 1.0 / np.sqrt(FEATURES), size=(FEATURES, _HIDDEN))
    b1 = rng.normal(0.0, 0.5, size=_HIDDEN)
    if jitter:
        w1 = w1 + np.random.default_rng(seed).normal(0.0, jitter, size=w1.shape)
    x, labels = tabular_data(seed, rows, label_noise)
    hidden = np.maximum(x @ w1 + b1, 0.0)
    design = np.hstack([hidden, np.ones((rows, 1))])
    target = np.eye(CLASSES)[labels] * 4.0 - 2.0  # logits of about +-2
    solution, *_ = np.linalg.lstsq(design, target, rcond=None)
    f32 = np.float32
    return w1.astype(f32), b1.astype(f32), solution[:-1].astype(f32), solution[-1].astype(f32)


def tabular_model(version: int) -> onnx.ModelProto:
    params = {1: (11, 4000, 0.0, 0.0), 2: (12, 4000, 0.0, 0.05), 3: (13, 120, 0.3, 0.6)}[version]
    w1, b1, w2, b2 = _fit(*params)
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["features", "w1", "b1"], ["h"]),
            helper.make_node("Relu", ["h"], ["hr"]),
            helper.make_node("Gemm", ["hr", "w2", "b2"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
            helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0),
        ],
        f"tabular_v{version}",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", FEATURES])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", CLASSES]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
        ],
        initializer=[numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))],
    )
    return _finish(graph)


def heavy_model(width: int = HEAVY_WIDTH, layers: int = 3, inputs: int = HEAVY_INPUTS, outputs: int = 16) -> onnx.ModelProto:
    rng = np.random.default_rng(7)
    nodes, inits = [], []
    previous, fan_in = "x", inputs
    for i in range(layers + 1):
        fan_out = outputs if i == layers else width
        w = (rng.standard_normal((fan_in, fan_out), dtype=np.float32) / np.sqrt(fan_in)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(np.zeros(fan_out, np.float32), f"b{i}")]
        nodes.append(helper.make_node("MatMul", [previous, f"w{i}"], [f"m{i}"]))
        last = "y" if i == layers else f"a{i}"
        nodes.append(helper.make_node("Add", [f"m{i}", f"b{i}"], [last if i == layers else f"s{i}"]))
        if i < layers:
            nodes.append(helper.make_node("Relu", [f"s{i}"], [last]))
        previous, fan_in = last, fan_out
    graph = helper.make_graph(
        nodes, "heavy",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", inputs])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", outputs])],
        initializer=inits,
    )
    return _finish(graph)


def _finish(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)], producer_name="sidemesh")
    model.ir_version = _IR_VERSION
    onnx.checker.check_model(model)
    return model


def _write(path: Path, model: onnx.ModelProto) -> bool:
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(path)
    return True


def make_examples(root: Path) -> list[str]:
    """Write whatever example is missing under ``root``; returns what was done, in words."""
    done = []
    for version in (1, 2, 3):
        if _write(root / "tabular" / str(version) / "model.onnx", tabular_model(version)):
            done.append(f"wrote {root}/tabular/{version}/model.onnx")
    configs = {
        "tabular": {"max_batch_size": 64, "max_queue_delay_us": 1000},
        "heavy": {"max_batch_size": 128, "max_queue_delay_us": 2000},
    }
    train = root / "tabular" / "train.npy"
    if not train.exists():
        np.save(train, tabular_data(11, 4000)[0])
        done.append(f"wrote {train} (v1's training features)")
    if _write(root / "heavy" / "1" / "model.onnx", heavy_model()):
        done.append(f"wrote {root}/heavy/1/model.onnx")
    for name, config in configs.items():
        path = root / name / "config.json"
        if not path.exists():
            path.write_text(json.dumps(config, indent=2) + "\n")
            done.append(f"wrote {path}")
    return done or [f"examples already in {root}"]
