"""The protocol-neutral request and response that the REST and gRPC codecs produce and
consume. Tensors are decoded into numpy arrays once, by the codec, and never re-parsed."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["InferInput", "RequestedOutput", "InferRequest", "InferOutput", "InferResponse"]


@dataclass(slots=True)
class InferInput:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray  # already of ``shape`` and the datatype's dtype


@dataclass(slots=True)
class RequestedOutput:
    name: str
    binary: bool | None = None  # REST binary_data; None when the caller did not say


@dataclass(slots=True)
class InferRequest:
    model: str
    version: str | None
    inputs: list[InferInput]
    id: str | None = None
    outputs: list[RequestedOutput] | None = None  # None: every output
    binary_output: bool = False  # REST request-level binary_data_output


@dataclass(slots=True)
class InferOutput:
    name: str
    datatype: str
    data: np.ndarray
    binary: bool = False


@dataclass(slots=True)
class InferResponse:
    model: str
    version: str
    id: str | None
    outputs: list[InferOutput] = field(default_factory=list)
