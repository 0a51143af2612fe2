"""The model server: Open Inference Protocol (KServe V2) over ONNX Runtime, REST and gRPC,
with dynamic batching. Run it with ``sidemesh model-server``."""

from .cli import main

__all__ = ["main"]
