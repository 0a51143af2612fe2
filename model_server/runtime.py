"""One ONNX model version on ONNX Runtime: session, tensor specs, provider, warm-up.

ONNX Runtime's ``run`` releases the GIL, so callers run it on a worker thread and the event
loop stays free. Provider selection happens once per process (``choose_providers``) and is
stated in one plain line by the server, instead of ONNX Runtime's wall of CUDA errors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .config import ModelConfig
from .datatypes import ONNX_TO_V2, numpy_dtype
from .errors import ConfigError, InferenceFailed

__all__ = ["TensorSpec", "OnnxModel", "ProviderChoice", "choose_providers"]

# Errors still surface as Python exceptions; this only keeps ONNX Runtime's C++ logger from
# printing a CUDA error per session on machines where CUDA is asked for but absent.
ort.set_default_logger_severity(3)


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output as V2 metadata shows it: dynamic dimensions are -1."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class ProviderChoice:
    """The execution providers to ask ONNX Runtime for, and why, in words."""

    providers: tuple[str, ...]
    reason: str


def _gpu_present() -> bool:
    return Path("/dev/nvidiactl").exists() or any(Path("/dev").glob("nvidia[0-9]*"))


def choose_providers(requested: tuple[str, ...] = ()) -> ProviderChoice:
    """CUDA when the CUDA provider is built in and a GPU device exists, CPU otherwise.

    An explicit list (from config.json) is honoured as given; ONNX Runtime still falls back
    to CPU if CUDA cannot start, and ``OnnxModel.provider`` reports what it really got.
    """
    if requested:
        return ProviderChoice(tuple(requested), "as configured")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return ProviderChoice(("CPUExecutionProvider",), "this ONNX Runtime build has no CUDA provider")
    if not _gpu_present() or os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        return ProviderChoice(("CPUExecutionProvider",), "no NVIDIA GPU device found")
    return ProviderChoice(("CUDAExecutionProvider", "CPUExecutionProvider"), "an NVIDIA GPU is present")


def _spec(node, where: str) -> TensorSpec:
    datatype = ONNX_TO_V2.get(node.type)
    if datatype is None:
        raise ConfigError(f"{where} {node.name!r} has type {node.type}, which ONNX Runtime's Python API cannot feed; supported: {', '.join(sorted(ONNX_TO_V2))}")
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (node.shape or ()))
    return TensorSpec(node.name, datatype, shape)


class OnnxModel:
    """A loaded model version. Immutable after construction; ``run`` is thread-safe."""

    def __init__(self, path: Path, config: ModelConfig, choice: ProviderChoice) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if config.threads:
            options.intra_op_num_threads = config.threads
        options.inter_op_num_threads = 1
        # Spinning worker threads would steal the cores the event loop needs between runs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(str(path), sess_options=options, providers=list(choice.providers))
        except Exception as exc:  # ONNX Runtime raises its own exception types
            raise ConfigError(f"{path}: ONNX Runtime cannot load it: {exc}") from exc
        self.provider: str = self._session.get_providers()[0]
        self.inputs = tuple(_spec(n, "input") for n in self._session.get_inputs())
        self.outputs = tuple(_spec(n, "output") for n in self._session.get_outputs())
        self.output_names = tuple(o.name for o in self.outputs)
        # Requests can be stacked along dimension 0 only when every tensor has a dynamic one.
        self.batchable = all(s.shape and s.shape[0] == -1 for s in self.inputs + self.outputs)

    def run(self, feeds: dict[str, np.ndarray], output_names: tuple[str, ...] | None = None) -> list[np.ndarray]:
        try:
            return self._session.run(list(output_names or self.output_names), feeds)
        except Exception as exc:
            raise InferenceFailed(f"ONNX Runtime failed the run: {exc}") from exc

    def warm_up(self) -> None:
        """One run on zeros (dynamic dimensions as 1) so the first request pays no set-up."""
        feeds = {}
        for spec in self.inputs:
            shape = tuple(1 if d < 0 else d for d in spec.shape)
            if spec.datatype == "BYTES":
                feeds[spec.name] = np.full(shape, "", dtype=object)
            else:
                feeds[spec.name] = np.zeros(shape, dtype=numpy_dtype(spec.datatype))
        self.run(feeds)
