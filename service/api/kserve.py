"""inference.GRPCInferenceService (Open Inference Protocol, KServe v2): glue to the engine.

Unmodified Triton/KServe clients (tritonclient, perf_analyzer, gateways) reach the same engine,
scheduler and batching as our own API. Tensors are converted by `kserve_tensors`; status codes
come from service.errors' table, as in our API. Triton-only RPCs (repository control, shared
memory, statistics, trace, logs) answer UNIMPLEMENTED.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from importlib.metadata import version as package_version
from typing import TYPE_CHECKING

import grpc

from service._pb import grpc_service_pb2 as pb
from service._pb import grpc_service_pb2_grpc as pb_grpc
from service._pb import model_config_pb2 as config_pb
from service.api import kserve_stream, triton_parameters
from service.api import kserve_tensors as tensors
from service.api.engine_holder import EngineHolder
from service.api.interceptors.metrics import label_rpc_model
from service.api.status import abort_with, client_message
from service.engine.types import GenerationRequest, GenerationResult
from service.errors import InvalidArgument, NotFound, ServeError, Unavailable

if TYPE_CHECKING:
    from service.engine.engine import ModelInfo

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
SERVER_NAME = "attnserve"
PLATFORM = "attnserve"  # a pipeline of ONNX graphs behind text/image tensors, not one graph
ANY_LENGTH = -1
STREAM_ANSWERS_BUFFERED = 64  # per ModelStreamInfer call, beyond gRPC's own send buffer
UNSERVED_RPCS = (
    "ModelStatistics",
    "RepositoryIndex",
    "RepositoryModelLoad",
    "RepositoryModelUnload",
    "SystemSharedMemoryStatus",
    "SystemSharedMemoryRegister",
    "SystemSharedMemoryUnregister",
    "CudaSharedMemoryStatus",
    "CudaSharedMemoryRegister",
    "CudaSharedMemoryUnregister",
    "TraceSetting",
    "LogSettings",
)

Context = grpc.aio.ServicerContext


class KServeServicer(EngineHolder, pb_grpc.GRPCInferenceServiceServicer):
    """Serves the engine attached with `attach`; until then inference answers UNAVAILABLE."""

    def served_model(self, name: str, version: str) -> ModelInfo:
        """The served model `name` (at `version`, "" = its serving version), as our API finds it;
        NotFound otherwise (the REST routes ask before reading a body, so an unknown model is
        404 whatever the body holds)."""
        served = [info for info in self.engine.models() if info.name == name]
        if not served:
            raise NotFound(f"Request for unknown model: '{name}' is not found")
        try:
            info = self.engine.resolve(name, served[0].task, version)
        except NotFound:
            versions = ", ".join(info.version for info in served)
            raise NotFound(
                f"Request for unknown model: '{name}' version {version} is not found "
                f"(served versions: {versions})"
            ) from None
        label_rpc_model(info.name, info.version)
        return info

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Context):
        return pb.ServerReadyResponse(ready=self._engine is not None and not self._engine.draining)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Context):
        """Not ready (rather than an error) for unknown models, as Triton answers."""
        try:
            self.served_model(request.name, request.version)
        except (NotFound, Unavailable):
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=not self.engine.draining)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Context):
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=package_version("attnserve"))

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Context):
        try:
            info = self.served_model(request.name, request.version)
            versions = sorted({m.version for m in self.engine.models() if m.name == info.name})
        except ServeError as error:
            await abort_with(context, error)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=info.name,
            versions=versions,
            platform=PLATFORM,
            inputs=[tensor(name=_input_name(info), datatype=tensors.BYTES, shape=[ANY_LENGTH])],
            outputs=[tensor(name=tensors.OUTPUT_NAME, datatype=tensors.BYTES, shape=[ANY_LENGTH])],
        )

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Context):
        """The Triton model config clients such as perf_analyzer read before sending."""
        try:
            info = self.served_model(request.name, request.version)
        except ServeError as error:
            await abort_with(context, error)
        string = config_pb.DataType.TYPE_STRING
        config = config_pb.ModelConfig(
            name=info.name,
            platform=PLATFORM,
            max_batch_size=0,  # the first dimension is ours (N texts), not Triton's batching
            input=[
                config_pb.ModelInput(name=_input_name(info), data_type=string, dims=[ANY_LENGTH])
            ],
            output=[
                config_pb.ModelOutput(name=tensors.OUTPUT_NAME, data_type=string, dims=[ANY_LENGTH])
            ],
        )
        return pb.ModelConfigResponse(config=config)

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Context):
        try:
            triton_parameters.check_unary(request.parameters)
            return await self._infer(request, context)
        except Exception as error:  # every failure gets its status code (INTERNAL if unknown)
            await abort_with(context, error)

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: Context
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Requests in a stream run concurrently (so they batch); each gets one response, in
        the order they finish, or with `stream: true` one per token chunk (kserve_stream). A
        failed request gets `error_message`; the stream goes on.

        A client that stops reading must not make the server hold its answers: at most
        STREAM_ANSWERS_BUFFERED of them wait to be sent (then the requests' token streams
        pause), and at most --max-queue of its requests run at once (then the next ones are not
        read: gRPC's flow control holds the client's sends). Unbounded, a stream that was not
        read took the server from 114 to 298 MiB in 40 s."""
        answers: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        unsent = asyncio.Semaphore(STREAM_ANSWERS_BUFFERED)  # answers in `answers`
        # requests being answered (while the models load, each is refused at once anyway)
        slots = asyncio.Semaphore(1 if self._engine is None else self._engine.config.max_queue)

        async def answer(request: pb.ModelInferRequest) -> None:
            try:
                async for response in self._stream_answers(request, context):
                    await unsent.acquire()
                    answers.put_nowait(response)
            finally:
                slots.release()

        async def read_requests(running: set[asyncio.Task]) -> None:
            try:
                while True:
                    await slots.acquire()
                    request = await anext(request_iterator, None)
                    if request is None:
                        break
                    task = asyncio.ensure_future(answer(request))
                    running.add(task)
                    task.add_done_callback(running.discard)
                await asyncio.gather(*running)
            finally:
                answers.put_nowait(None)  # the end mark: never waits for room

        running: set[asyncio.Task] = set()
        reader = asyncio.ensure_future(read_requests(running))
        try:
            while (response := await answers.get()) is not None:
                unsent.release()
                yield response
            await reader  # a broken request stream surfaces here
        finally:
            for task in (reader, *running):
                task.cancel()

    async def _stream_answers(
        self, request: pb.ModelInferRequest, context: Context
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        try:
            options = triton_parameters.stream_options(request.parameters)
            if not options.stream:
                response = kserve_stream.final_flag(await self._infer(request, context), True)
                yield pb.ModelStreamInferResponse(infer_response=response)
                return
            info, infer_input, generations = await self.prepare(request, context)
            responses = kserve_stream.token_responses(
                self.engine, request, info, generations, infer_input.shape, options
            )
            async with aclosing(responses):
                async for response in responses:
                    yield response
        except Exception as error:
            yield pb.ModelStreamInferResponse(
                error_message=client_message(error),
                infer_response=pb.ModelInferResponse(model_name=request.model_name, id=request.id),
            )

    async def prepare(
        self, request: pb.ModelInferRequest, context: Context
    ) -> tuple[ModelInfo, tensors.InferInput, list[GenerationRequest]]:
        """The model, the input and one engine request per element, all checked (ServeError
        otherwise); the REST transport's token streams start here too."""
        info = self.served_model(request.model_name, request.model_version)
        config = self.engine.config
        tensors.check_requested_outputs(request, info.name)
        params, timeout_s = tensors.generation_options(request.parameters, info.name)
        prompt = tensors.prompt_parameter(request.parameters, info.name)
        deadline = tensors.earliest_deadline(context.time_remaining(), timeout_s)

        def expand() -> tuple[tensors.InferInput, list[GenerationRequest]]:
            """The elements as engine requests: a loop over up to max_batch_elements inputs of
            up to max_input_bytes each, run off the event loop."""
            infer_input = tensors.read_input(
                request, info.name, _input_name(info), config.max_batch_elements
            )
            generations = tensors.generation_requests(
                infer_input,
                info.name,
                info.version,
                info.task,
                params,
                deadline,
                config.max_input_bytes,
                prompt,
            )
            return infer_input, generations

        infer_input, generations = await asyncio.to_thread(expand)
        return info, infer_input, generations

    async def _infer(
        self, request: pb.ModelInferRequest, context: Context
    ) -> pb.ModelInferResponse:
        info, infer_input, generations = await self.prepare(request, context)
        results = await self._generate_all(generations, infer_input.name)
        output, raw = tensors.text_output([r.text for r in results], infer_input.shape)
        response = pb.ModelInferResponse(
            model_name=info.name,
            model_version=info.version,
            id=request.id,
            outputs=[output],
            raw_output_contents=[raw],
        )
        if any(result.truncated for result in results):  # some input was cut (truncate)
            response.parameters[tensors.TRUNCATED_PARAMETER].bool_param = True
        return response

    async def _generate_all(
        self, requests: list[GenerationRequest], input_name: str
    ) -> list[GenerationResult]:
        """All elements concurrently, so the scheduler batches them; the first failure cancels
        the rest (the call has one status)."""

        async def element(index: int, request: GenerationRequest) -> GenerationResult:
            try:
                return await self.engine.result(request)
            except InvalidArgument as error:
                if len(requests) == 1:
                    raise
                raise InvalidArgument(
                    f"element {index} of inference input '{input_name}': {error}"
                ) from None

        if len(requests) > 1:
            self.engine.check_room(requests[0], len(requests))
        tasks = [asyncio.ensure_future(element(i, r)) for i, r in enumerate(requests)]
        try:
            return await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)  # the others' errors: seen


def _input_name(info: ModelInfo) -> str:
    return tensors.INPUT_NAME_BY_TASK[info.task]


def unserved_message(method: str) -> str:
    """What a call of a Triton extension we do not serve is told, on either port."""
    return f"{method} is a Triton extension that attnserve does not serve"


def _unserved(method: str):
    async def answer_unimplemented(self, request, context: Context):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, unserved_message(method))

    return answer_unimplemented


for _method in UNSERVED_RPCS:
    setattr(KServeServicer, _method, _unserved(_method))


def add_kserve_servicer(server: grpc.aio.Server) -> KServeServicer:
    """Register inference.GRPCInferenceService on `server`; `attach` the engine once loaded."""
    servicer = KServeServicer()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    return servicer
