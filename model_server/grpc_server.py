"""The V2 gRPC front end (``inference.GRPCInferenceService``) on grpcio's asyncio server.

Domain errors map to gRPC status codes here, from the ``grpc_code`` each error class
carries; the handlers themselves only decode, call the ``InferenceService`` and encode.
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
from google.protobuf.message import DecodeError

from .errors import InvalidInput, ModelServerError
from .grpc_codec import decode_request, encode_response
from .inference import InferenceService
from .proto import grpc_service_pb2 as pb
from .proto import grpc_service_pb2_grpc as pb_grpc
from .metrics import CLIENT_CLOSED

__all__ = ["build_grpc_server"]

log = logging.getLogger("sidemesh.model_server")
SERVICE = "inference.GRPCInferenceService"


async def _abort(context: grpc.aio.ServicerContext, exc: Exception) -> None:
    if isinstance(exc, ModelServerError):
        await context.abort(getattr(grpc.StatusCode, exc.grpc_code), str(exc))
    log.exception("unexpected error in a gRPC call", exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error in the model server; the server log has the details")


class _Servicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, service: InferenceService) -> None:
        self._service = service

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self._service.registry.ready)

    async def ModelReady(self, request, context):
        try:
            entry = self._service.registry.version(request.name, request.version)
        except ModelServerError as exc:
            await _abort(context, exc)
        return pb.ModelReadyResponse(ready=entry.ready)

    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(**self._service.server_metadata())

    async def ModelMetadata(self, request, context):
        try:
            meta = self._service.model_metadata(request.name, request.version)
        except ModelServerError as exc:
            await _abort(context, exc)
        response = pb.ModelMetadataResponse(name=meta["name"], versions=meta["versions"], platform=meta["platform"])
        for spec in meta["inputs"]:
            response.inputs.add(**spec)
        for spec in meta["outputs"]:
            response.outputs.add(**spec)
        return response

    async def ModelInfer(self, data: bytes, context):
        started = time.monotonic()
        model, version, code = "", "", 500
        try:
            try:
                request = pb.ModelInferRequest.FromString(data)
            except DecodeError as exc:
                raise InvalidInput(f"the request is not an inference.ModelInferRequest message ({exc})") from None
            entry = self._service.resolve(request.model_name, request.model_version)
            model, version = entry.model_name, entry.version
            decoded = decode_request(request, model, version)
            response = encode_response(await self._service.infer(entry, decoded))
            code = 200
            return response
        except ModelServerError as exc:
            code = exc.http_status
            await _abort(context, exc)
        except asyncio.CancelledError:
            code = CLIENT_CLOSED  # the caller cancelled or hung up
            raise
        except Exception as exc:
            await _abort(context, exc)
        finally:
            self._service.metrics.request_done(model, version, code, time.monotonic() - started)


def build_grpc_server(service: InferenceService, max_message_bytes: int) -> grpc.aio.Server:
    """An unstarted server with the V2 service registered; the caller adds the port."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", -1),
        ]
    )
    handlers = _handlers(_Servicer(service))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)
    return server


def _handlers(servicer: _Servicer) -> dict[str, grpc.RpcMethodHandler]:
    """The service's methods, as the generated ``add_..._to_server`` registers them, except that
    ModelInfer takes its request as bytes and parses it itself: a message that does not parse
    gets INVALID_ARGUMENT saying so, where grpcio's own failed deserialization answers UNKNOWN
    and logs a traceback per call."""
    def unary(method, request: type | None, response: type) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(method, request.FromString if request else None, response.SerializeToString)

    return {
        "ServerLive": unary(servicer.ServerLive, pb.ServerLiveRequest, pb.ServerLiveResponse),
        "ServerReady": unary(servicer.ServerReady, pb.ServerReadyRequest, pb.ServerReadyResponse),
        "ModelReady": unary(servicer.ModelReady, pb.ModelReadyRequest, pb.ModelReadyResponse),
        "ServerMetadata": unary(servicer.ServerMetadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse),
        "ModelMetadata": unary(servicer.ModelMetadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse),
        "ModelInfer": unary(servicer.ModelInfer, None, pb.ModelInferResponse),
    }
