"""Tiny ONNX models for protocol tests: one echo model per V2 datatype."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

ECHO_TYPES = {
    "BOOL": TensorProto.BOOL, "UINT8": TensorProto.UINT8, "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32, "UINT64": TensorProto.UINT64, "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16, "INT32": TensorProto.INT32, "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16, "FP32": TensorProto.FLOAT, "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}


def echo_model(elem_type: int) -> onnx.ModelProto:
    """``x`` [-1, 3] -> ``y`` (the same) and ``shape`` (INT64 shape of x)."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"]), helper.make_node("Shape", ["x"], ["shape"])],
        "echo",
        [helper.make_tensor_value_info("x", elem_type, ["batch", 3])],
        [helper.make_tensor_value_info("y", elem_type, ["batch", 3]), helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def write_echo_models(repo: Path) -> None:
    for datatype, elem in ECHO_TYPES.items():
        path = repo / f"echo_{datatype.lower()}" / "1" / "model.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(echo_model(elem), str(path))
