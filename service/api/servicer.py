"""attnserve.v1.AttentionService: glue between gRPC and the engine.

Each RPC converts the proto request, hands it to `Engine.generate` (which validates it against
the model and the server's caps), and converts what comes back; every failure becomes a status
code through `abort_with`. No model logic lives here.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing

import grpc

from service._pb.attnserve.v1 import attnserve_pb2 as pb
from service._pb.attnserve.v1 import attnserve_pb2_grpc as pb_grpc
from service.api import convert
from service.api.engine_holder import EngineHolder
from service.api.interceptors.metrics import label_rpc_model
from service.api.status import abort_with
from service.engine.types import GenerationRequest, TokenDelta
from service.errors import InvalidArgument, ServeError
from service.runtime.tasks import Task

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AttentionService"].full_name

Context = grpc.aio.ServicerContext


def _deadline(context: Context) -> float | None:
    """The client's deadline on the engine's clock (time.monotonic), None if it set none."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


class AttentionServicer(EngineHolder, pb_grpc.AttentionServiceServicer):
    """Serves the engine attached with `attach`; until then every RPC answers UNAVAILABLE."""

    async def Summarize(
        self, request: pb.SummarizeRequest, context: Context
    ) -> pb.GenerateResponse:
        return await self._unary(convert.summarize_request, request, context)

    async def SummarizeStream(
        self, request: pb.SummarizeRequest, context: Context
    ) -> AsyncIterator[pb.GenerateChunk]:
        async for chunk in self._stream(convert.summarize_request, request, context):
            yield chunk

    async def Caption(self, request: pb.CaptionRequest, context: Context) -> pb.GenerateResponse:
        return await self._unary(convert.caption_request, request, context)

    async def CaptionStream(
        self, request: pb.CaptionRequest, context: Context
    ) -> AsyncIterator[pb.GenerateChunk]:
        async for chunk in self._stream(convert.caption_request, request, context):
            yield chunk

    async def ListModels(
        self, request: pb.ListModelsRequest, context: Context
    ) -> pb.ListModelsResponse:
        try:
            if request.task not in ("", *Task):
                tasks = [str(task) for task in Task]
                raise InvalidArgument(f"task must be one of {tasks} or empty, got {request.task!r}")
            infos = self.engine.models()
        except ServeError as error:
            await abort_with(context, error)
        return pb.ListModelsResponse(
            models=[
                convert.model_info_to_proto(info)
                for info in infos
                if not request.task or info.task == request.task
            ]
        )

    def _generation(
        self, to_request: Callable[..., GenerationRequest], request, context: Context
    ) -> GenerationRequest:
        """The engine request for `request`; this RPC's metrics get the model that answers it."""
        generation = to_request(request, _deadline(context))
        info = self.engine.resolve(generation.model, generation.task, generation.version)
        label_rpc_model(info.name, info.version)
        return generation

    async def _unary(
        self, to_request: Callable[..., GenerationRequest], request, context: Context
    ) -> pb.GenerateResponse:
        try:
            generation = self._generation(to_request, request, context)
            return convert.response_from_result(await self.engine.result(generation))
        except Exception as error:  # every failure gets its status code (INTERNAL if unknown)
            await abort_with(context, error)

    async def _stream(
        self, to_request: Callable[..., GenerationRequest], request, context: Context
    ) -> AsyncIterator[pb.GenerateChunk]:
        try:
            generation = self._generation(to_request, request, context)
            async with aclosing(self.engine.generate(generation)) as outputs:
                async for output in outputs:
                    if isinstance(output, TokenDelta):
                        yield convert.chunk_from_delta(output)
                    else:
                        yield convert.final_chunk(output)
        except Exception as error:
            await abort_with(context, error)
