"""V2 gRPC messages to and from the protocol-neutral request and response.

Inputs come either as typed ``contents`` or, for every input at once, as
``raw_input_contents``; outputs always go back as ``raw_output_contents`` (what Triton
does, and the only form that carries FP16).
"""

from __future__ import annotations

from .datatypes import GRPC_CONTENTS_FIELD
from .errors import InvalidInput
from .proto import grpc_service_pb2 as pb
from .tensor_codec import check_header, from_raw, from_values, to_raw
from .tensors import InferInput, InferRequest, InferResponse, RequestedOutput

__all__ = ["decode_request", "encode_response"]



def decode_request(message: pb.ModelInferRequest, model: str, version: str) -> InferRequest:
    raw = message.raw_input_contents
    if raw and len(raw) != len(message.inputs):
        raise InvalidInput(f"raw_input_contents has {len(raw)} entries for {len(message.inputs)} inputs; give one per input")
    if not message.inputs:
        raise InvalidInput("'inputs' must hold at least one tensor")
    inputs = []
    for i, tensor in enumerate(message.inputs):
        name, datatype, shape = check_header(tensor.name, tensor.datatype, list(tensor.shape))
        if raw:
            data = from_raw(name, datatype, shape, raw[i])
        else:
            field = GRPC_CONTENTS_FIELD.get(datatype)
            if field is None:
                raise InvalidInput(f"input {name!r}: {datatype} has no typed contents field; send it in raw_input_contents")
            data = from_values(name, datatype, shape, getattr(tensor.contents, field))
        inputs.append(InferInput(name, datatype, shape, data))
    outputs = None
    if message.outputs:
        outputs = []
        for out in message.outputs:
            if "classification" in out.parameters:
                raise InvalidInput(f"output {out.name!r}: the classification extension is not supported")
            outputs.append(RequestedOutput(out.name, True))
    return InferRequest(model, version, inputs, message.id or None, outputs, True)


def encode_response(response: InferResponse) -> pb.ModelInferResponse:
    message = pb.ModelInferResponse(model_name=response.model, model_version=response.version, id=response.id or "")
    for out in response.outputs:
        message.outputs.add(name=out.name, datatype=out.datatype, shape=out.data.shape)
        message.raw_output_contents.append(to_raw(out.datatype, out.data))
    return message
