"""The inference path shared by REST and gRPC: resolve the version, check the request
against the model's tensor specs, queue it on the batcher, select the outputs.

Every check raises ``InvalidInput`` with the tensor's name and what was expected, before
anything reaches ONNX Runtime.
"""

from __future__ import annotations

from .errors import InvalidInput
from .metrics import ModelServerMetrics
from .repository import ModelRegistry, VersionEntry
from .runtime import TensorSpec
from .tensors import InferOutput, InferRequest, InferResponse

__all__ = ["InferenceService", "SERVER_NAME", "PLATFORM", "EXTENSIONS"]

SERVER_NAME = "sidemesh"
PLATFORM = "onnxruntime_onnx"
EXTENSIONS = ("binary_tensor_data",)


def _shape_matches(spec: TensorSpec, shape: tuple[int, ...]) -> bool:
    return len(spec.shape) == len(shape) and all(want in (-1, got) for want, got in zip(spec.shape, shape))


class InferenceService:
    """Turns a decoded ``InferRequest`` into an ``InferResponse``; answers metadata."""

    def __init__(self, registry: ModelRegistry, metrics: ModelServerMetrics, server_version: str) -> None:
        self.registry = registry
        self.metrics = metrics
        self.server_version = server_version

    def server_metadata(self) -> dict:
        return {"name": SERVER_NAME, "version": self.server_version, "extensions": list(EXTENSIONS)}

    def model_metadata(self, name: str, version: str | None) -> dict:
        entry = self.registry.ready_version(name, version)
        model = self.registry.model(name)
        return {
            "name": name,
            "versions": list(model.versions) if not version else [entry.version],
            "platform": PLATFORM,
            "inputs": [s.to_dict() for s in entry.model.inputs],
            "outputs": [s.to_dict() for s in entry.model.outputs],
        }

    def resolve(self, name: str, version: str | None) -> VersionEntry:
        """The version a request goes to; ``ModelNotFound`` for unknown names."""
        return self.registry.version(name, version)

    async def infer(self, entry: VersionEntry, request: InferRequest) -> InferResponse:
        entry = self.registry.ready_version(entry.model_name, entry.version)
        model = entry.model
        feeds, rows = self._check_inputs(entry, request)
        selected = self._check_outputs(entry, request)
        version_metrics = self.metrics.for_version(entry.model_name, entry.version)
        version_metrics.inflight.inc()
        try:
            outputs = await entry.batcher.submit(feeds, rows)
        finally:
            version_metrics.inflight.dec()
        response = InferResponse(entry.model_name, entry.version, request.id)
        specs = {s.name: s for s in model.outputs}
        for name, binary in selected:
            response.outputs.append(InferOutput(name, specs[name].datatype, outputs[name], binary))
        return response

    @staticmethod
    def _check_inputs(entry: VersionEntry, request: InferRequest) -> tuple[dict, int]:
        model = entry.model
        specs = {s.name: s for s in model.inputs}
        feeds = {}
        for tensor in request.inputs:
            spec = specs.get(tensor.name)
            if spec is None:
                raise InvalidInput(
                    f"unknown input {tensor.name!r} for model {entry.model_name!r}; expected: {', '.join(specs)}"
                )
            if tensor.name in feeds:
                raise InvalidInput(f"input {tensor.name!r} is given more than once")
            if tensor.datatype != spec.datatype:
                raise InvalidInput(f"input {tensor.name!r}: datatype {tensor.datatype} does not match the model's {spec.datatype}")
            if not _shape_matches(spec, tensor.shape):
                raise InvalidInput(
                    f"input {tensor.name!r}: shape {list(tensor.shape)} does not match the model's {list(spec.shape)} (-1 is any size)"
                )
            feeds[tensor.name] = tensor.data
        missing = [name for name in specs if name not in feeds]
        if missing:
            raise InvalidInput(f"missing input(s) {', '.join(repr(m) for m in missing)} for model {entry.model_name!r}")
        rows = 1
        limit = entry.max_batch_size
        if model.batchable:
            row_counts = {t.shape[0] for t in request.inputs}
            if len(row_counts) != 1:
                raise InvalidInput(f"inputs disagree on the batch size (dimension 0): {sorted(row_counts)}")
            rows = row_counts.pop()
            if limit and rows > limit:
                raise InvalidInput(f"batch of {rows} rows is over this model's max_batch_size of {limit}; split the request")
        return feeds, rows

    @staticmethod
    def _check_outputs(entry: VersionEntry, request: InferRequest) -> list[tuple[str, bool]]:
        names = entry.model.output_names
        if request.outputs is None:
            return [(name, request.binary_output) for name in names]
        selected = []
        for out in request.outputs:
            if out.name not in names:
                raise InvalidInput(f"unknown output {out.name!r} requested; model {entry.model_name!r} has: {', '.join(names)}")
            selected.append((out.name, request.binary_output if out.binary is None else out.binary))
        return selected

