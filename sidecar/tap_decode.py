"""Lean decoding of infer request bodies for the statistics tap.

The tap only sees requests the model server has already answered with a 200, so the
bodies are valid V2: the model server's own decoders (which check every field so that a
caller's mistake gets a clear 400) would spend two thirds of the tap's time proving it
again. Here a body becomes arrays with the least work that is still safe on any input:
JSON through ``orjson`` and one ``np.asarray`` per group of same-shaped tensors across the
whole batch, binary and gRPC raw contents as ``np.frombuffer`` views. Anything that does
not fit (a hostile or foreign body) raises, and the tap counts it as undecodable.
"""

from __future__ import annotations

import math

import numpy as np
import orjson

from model_server.datatypes import GRPC_CONTENTS_FIELD, V2_TO_NUMPY
from model_server.proto import grpc_service_pb2 as v2
from model_server.tensor_codec import from_raw, from_values

__all__ = ["Batch"]

_NUMERIC = {name: dtype for name, dtype in V2_TO_NUMPY.items() if name != "BYTES"}


class Batch:
    """The tensors of one batch of bodies, grouped for the sketches: ``groups()`` yields
    ``(input name, datatype, array shaped [rows, ...], bodies it came from)``, with the
    element lists of all JSON tensors of one name and shape converted by one ``np.asarray``."""

    __slots__ = ("_lists", "_arrays", "_bodies", "undecodable")

    def __init__(self) -> None:
        self._lists: dict[tuple, list] = {}  # (name, datatype, shape) -> JSON element lists
        self._arrays: dict[tuple, list[np.ndarray]] = {}  # (name, datatype, row shape, dtype) -> arrays
        self._bodies: dict[tuple, int] = {}  # bodies per group of _arrays
        self.undecodable = 0

    def add_rest(self, body: bytes, header_length: bytes | None) -> bool:
        """One V2 REST body (JSON, or the binary extension when ``header_length`` is the
        ``Inference-Header-Content-Length`` value); False when it cannot be read."""
        try:
            json_end = len(body) if header_length is None else int(header_length)
            if not 0 < json_end <= len(body):
                raise ValueError("the JSON header length is outside the body")
            doc = orjson.loads(memoryview(body)[:json_end]) if json_end != len(body) else orjson.loads(body)
            offset = json_end
            staged = []
            for item in doc["inputs"]:
                name, datatype, shape = item["name"], item["datatype"], tuple(item["shape"])
                if not (isinstance(name, str) and isinstance(datatype, str) and all(type(d) is int for d in shape)):
                    raise ValueError("name and datatype must be strings, shape a list of integers")  # they key the groups
                params = item.get("parameters")
                size = params.get("binary_data_size") if params else None
                if size is None:
                    data = item["data"]
                    if datatype in _NUMERIC and (len(data) == math.prod(shape) or (len(shape) > 1 and len(data) == shape[0])):
                        staged.append(((name, datatype, shape), data))  # flat or nested: converted with its group
                    else:
                        staged.append(self._keyed(name, datatype, from_values(name, datatype, shape, data)))
                else:
                    staged.append(self._keyed(name, datatype, from_raw(name, datatype, shape, body[offset:offset + size])))
                    offset += size
        except Exception:
            self.undecodable += 1
            return False
        self._stage(staged)
        return True

    def add_grpc(self, body: bytes) -> bool:
        """One serialized ``ModelInferRequest``; False when it cannot be read."""
        try:
            message = v2.ModelInferRequest.FromString(body)
            raw = message.raw_input_contents
            staged = []
            for i, tensor in enumerate(message.inputs):
                name, datatype, shape = tensor.name, tensor.datatype, tuple(tensor.shape)
                if raw:
                    array = from_raw(name, datatype, shape, raw[i])
                else:
                    array = from_values(name, datatype, shape, getattr(tensor.contents, GRPC_CONTENTS_FIELD[datatype]))
                staged.append(self._keyed(name, datatype, array))
        except Exception:
            self.undecodable += 1
            return False
        self._stage(staged)
        return True

    @staticmethod
    def _keyed(name: str, datatype: str, array: np.ndarray) -> tuple:
        if not array.ndim:
            array = array.reshape(1)
        return (name, datatype, array.shape[1:], array.dtype), array

    def _stage(self, staged: list[tuple]) -> None:
        """Keep a body's tensors only once all of them decoded: a body counts whole or not at all."""
        for key, value in staged:
            if len(key) == 3:
                self._lists.setdefault(key, []).append(value)
            else:
                self._add(key, value, 1)

    def _add(self, key: tuple, array: np.ndarray, bodies: int) -> None:
        self._arrays.setdefault(key, []).append(array)
        self._bodies[key] = self._bodies.get(key, 0) + bodies

    def groups(self):
        for (name, datatype, shape), lists in self._lists.items():
            dtype = _NUMERIC[datatype]
            try:
                array = np.asarray(lists, dtype=dtype).reshape((-1,) + shape[1:])
            except (ValueError, TypeError, OverflowError):
                # Ragged or foreign element lists: convert one by one, counting what fails.
                parts = []
                for data in lists:
                    try:
                        part = np.asarray(data, dtype=dtype).reshape(shape)
                        parts.append(part.reshape(1) if not part.ndim else part)  # a scalar is one row, as in _keyed
                    except (ValueError, TypeError, OverflowError):
                        self.undecodable += 1
                if not parts:
                    continue
                array = np.concatenate(parts)
                lists = parts
            self._add((name, datatype, array.shape[1:], array.dtype), array, len(lists))
        self._lists = {}
        for key, arrays in self._arrays.items():
            yield key[0], key[1], arrays[0] if len(arrays) == 1 else np.concatenate(arrays), self._bodies[key]
