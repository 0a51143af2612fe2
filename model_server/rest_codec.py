"""V2 REST bodies: JSON tensors and the binary tensor data extension, in and out.

A request body is JSON, optionally followed by raw tensor bytes; the
``Inference-Header-Content-Length`` header says where the JSON ends, and each binary input
says its size in ``parameters.binary_data_size``, in input order. Responses put outputs
the caller asked for in binary (``binary_data`` per output or ``binary_data_output`` for
all) after the JSON the same way.

JSON goes through orjson: parsing 512 floats costs ~17 us instead of the standard
library's ~230 us, and numeric outputs serialize straight from numpy. JSON has no NaN or
infinity; such output values appear as null (ask for binary output to get them exactly).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from .errors import InvalidInput
from .tensor_codec import check_header, from_raw, from_values, to_raw
from .tensors import InferInput, InferRequest, InferResponse, RequestedOutput

__all__ = ["HEADER_LENGTH", "decode_request", "encode_response"]

HEADER_LENGTH = "Inference-Header-Content-Length"


def _json_header_length(value: str | None, body_length: int) -> int:
    if value is None:
        return body_length
    try:
        length = int(value)
    except ValueError:
        raise InvalidInput(f"{HEADER_LENGTH} must be an integer, got {value!r}") from None
    if not 0 < length <= body_length:
        raise InvalidInput(f"{HEADER_LENGTH} is {length} but the body is {body_length} bytes")
    return length


def _parameters(obj: dict, where: str) -> dict:
    params = obj.get("parameters", {})
    if not isinstance(params, dict):
        raise InvalidInput(f"{where}: 'parameters' must be an object")
    return params


def _flag(params: dict, key: str, where: str) -> bool | None:
    value = params.get(key)
    if value is not None and not isinstance(value, bool):
        raise InvalidInput(f"{where}: parameter {key!r} must be true or false")
    return value


def decode_request(model: str, version: str | None, body: bytes, header_length: str | None) -> InferRequest:
    """Parse one infer request body; raises ``InvalidInput`` naming the field at fault."""
    json_end = _json_header_length(header_length, len(body))
    try:
        doc = orjson.loads(memoryview(body)[:json_end])
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidInput("request body must be a JSON object with an 'inputs' list")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("'id' must be a string")
    binary_output = bool(_flag(_parameters(doc, "request"), "binary_data_output", "request"))
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("'inputs' must be a non-empty list of tensors")

    view = memoryview(body)
    offset = json_end
    inputs: list[InferInput] = []
    for i, item in enumerate(raw_inputs):
        if not isinstance(item, dict):
            raise InvalidInput(f"inputs[{i}] must be an object with name, shape, datatype and data")
        name, datatype, shape = check_header(item.get("name"), item.get("datatype"), item.get("shape"))
        size = _parameters(item, f"input {name!r}").get("binary_data_size")
        if size is None:
            if "data" not in item:
                raise InvalidInput(f"input {name!r}: needs 'data', or 'parameters.binary_data_size' for binary data")
            data = from_values(name, datatype, shape, item["data"])
        else:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise InvalidInput(f"input {name!r}: binary_data_size must be a non-negative integer")
            if offset + size > len(body):
                raise InvalidInput(
                    f"input {name!r}: binary_data_size {size} runs past the end of the body ({len(body) - offset} bytes left)"
                )
            data = from_raw(name, datatype, shape, view[offset : offset + size])
            offset += size
        inputs.append(InferInput(name, datatype, shape, data))
    if offset != len(body):
        raise InvalidInput(f"body has {len(body) - offset} bytes beyond the JSON header and the binary inputs it declares")

    outputs = None
    if "outputs" in doc:
        raw_outputs = doc["outputs"]
        if not isinstance(raw_outputs, list):
            raise InvalidInput("'outputs' must be a list")
        outputs = []
        for i, item in enumerate(raw_outputs):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise InvalidInput(f"outputs[{i}] must be an object with a string 'name'")
            params = _parameters(item, f"output {item['name']!r}")
            if "classification" in params:
                raise InvalidInput(f"output {item['name']!r}: the classification extension is not supported")
            outputs.append(RequestedOutput(item["name"], _flag(params, "binary_data", f"output {item['name']!r}")))
    return InferRequest(model, version, inputs, request_id, outputs, binary_output)


def _json_data(datatype: str, name: str, array: np.ndarray) -> Any:
    if datatype != "BYTES":
        return np.ascontiguousarray(array).reshape(-1)
    try:
        return [b if isinstance(b, str) else bytes(b).decode("utf-8") for b in array.reshape(-1)]
    except UnicodeDecodeError:
        raise InvalidInput(f"output {name!r} holds bytes that are not UTF-8 text; request it with binary_data") from None


def encode_response(response: InferResponse) -> tuple[bytes, int | None]:
    """The body, and the JSON header's length when binary outputs follow it (else None)."""
    outputs = []
    blobs: list[bytes] = []
    for out in response.outputs:
        entry: dict[str, Any] = {"name": out.name, "datatype": out.datatype, "shape": list(out.data.shape)}
        if out.binary:
            blob = to_raw(out.datatype, out.data)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = _json_data(out.datatype, out.name, out.data)
        outputs.append(entry)
    doc: dict[str, Any] = {"model_name": response.model, "model_version": response.version}
    if response.id is not None:
        doc["id"] = response.id
    doc["outputs"] = outputs
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)
