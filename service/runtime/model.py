"""A loaded model: its manifest, tokenizer and the encoder/decoder ONNX Runtime sessions.

On the CPU the K/V tensors are numpy arrays. On CUDA the sessions run through IOBinding: the
cross and self K/V stay on the device as OrtValues between steps (the decoder's presents are
bound as device outputs and fed back as the next past), and only token ids, masks and logits
cross the bus. What each run costs (bytes across, K/V buffers created, runs) is counted in the
model's `StepCounters` (service.runtime.step_counters).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.runtime.kv_tensors import NumpyOps, Tensor, TensorOps
from service.runtime.manifest import ModelManifest
from service.runtime.sessions import SessionThreads, create_session
from service.runtime.step_counters import StepCounters
from service.runtime.token_choice import DeviceArgmax
from service.runtime.tokenizer import TextTokenizer

KV_DTYPES = {"fp32": np.float32, "int8": np.float32, "fp16": np.float16}

log = logging.getLogger(__name__)


@dataclass
class DecoderOutput:
    logits: np.ndarray  # float32 [R, V]: the last new token's, of every row or of `host_rows`
    presents: list[Tensor]  # present_key_0, present_value_0, ...
    attention: np.ndarray | None  # float32 [B, S]: the last new token's cross-attention
    tokens: np.ndarray | None = None  # int64 [B]: each row's argmax, when chosen on the device


@dataclass
class EncoderOutput:
    encoder_mask: np.ndarray  # int64 [B, S]
    cross: list[Tensor]  # cross_key_0, cross_value_0, ... [B, H, S, Dh]


class LoadedModel:
    """Runs one model's graphs; knows nothing about requests or batching policy."""

    def __init__(
        self,
        model_dir: Path,
        manifest: ModelManifest,
        device: str,
        threads: SessionThreads | None = None,
    ):
        threads = threads or SessionThreads()
        self.threads = threads  # the encoder's calling thread joins its pool's cores
        self.model_dir = Path(model_dir)
        self.manifest = manifest
        self.device = device
        self.encoder = create_session(
            self.model_dir / manifest.encoder.file,
            device,
            threads.encoder,
            spinning=threads.spinning,
            cpus=threads.encoder_cpus,
        )
        self.decoder = create_session(
            self.model_dir / manifest.decoder.file,
            device,
            threads.decoder,
            spinning=threads.spinning,
            cpus=threads.decoder_cpus,
        )
        self.provider = self.decoder.get_providers()[0]
        self.tokenizer = TextTokenizer(
            self.model_dir / manifest.tokenizer_file, manifest.max_input_tokens
        )
        if self.tokenizer.vocab_size > manifest.dims.vocab_size:
            log.warning(
                "%s: its tokenizer has %d tokens, its model %d: a text holding one of the "
                "others fails (INTERNAL) until the tokenizer matches (a tokenizer extended "
                "without resizing the model's embeddings?)",
                *(self.model_dir, self.tokenizer.vocab_size, manifest.dims.vocab_size),
            )
        self.kv_dtype = KV_DTYPES[manifest.dtype]
        layers = range(manifest.dims.num_layers)
        self._cross_names = [f"cross_{kind}_{i}" for i in layers for kind in ("key", "value")]
        self._past_names = [f"past_{kind}_{i}" for i in layers for kind in ("key", "value")]
        self._present_names = [f"present_{kind}_{i}" for i in layers for kind in ("key", "value")]
        self.counters = StepCounters()
        self._device_argmax: DeviceArgmax | None = None  # built on first use (needs onnx)
        self.device_id = 0
        if device == "cuda":
            from service.runtime.kv_tensors import OrtValueOps

            options = self.decoder.get_provider_options().get("CUDAExecutionProvider", {})
            self.device_id = int(options.get("device_id", 0))
            self.ops: TensorOps = OrtValueOps(self.kv_dtype, "cuda", self.device_id, self.counters)
        else:
            self.ops = NumpyOps(self.kv_dtype, self.counters)

    @classmethod
    def load(
        cls, model_dir: Path, device: str = "cpu", threads: SessionThreads | None = None
    ) -> LoadedModel:
        return cls(model_dir, ModelManifest.load(model_dir), device, threads)

    @property
    def kv_bytes_per_position(self) -> int:
        """Bytes of K and V across all layers for one row and one (self or cross) position."""
        dims = self.manifest.dims
        itemsize = np.dtype(self.kv_dtype).itemsize
        return 2 * dims.num_layers * dims.num_heads * dims.head_dim * itemsize

    def empty_past(self, rows: int) -> list[Tensor]:
        dims = self.manifest.dims
        shape = (rows, dims.num_heads, 0, dims.head_dim)
        return [self.ops.zeros(shape) for _ in self._past_names]

    def run_encoder(self, feeds: dict[str, np.ndarray]) -> EncoderOutput:
        """feeds: input_ids + attention_mask (text) or pixel_values (images), batched."""
        self._count_feeds(feeds)
        if self.device == "cuda":
            cross = self._run_bound(self.encoder, feeds, {}, self._cross_names, host_outputs=0)
        else:
            cross = self.counters.run(lambda: self.encoder.run(self._cross_names, feeds))
        self.counters.kv_allocations += len(cross)
        if "attention_mask" in feeds:
            mask = feeds["attention_mask"].astype(np.int64)
        else:  # image encoders attend to every patch
            rows, _, length, _ = _shape(cross[0])
            mask = np.ones((rows, length), np.int64)
        return EncoderOutput(encoder_mask=mask, cross=list(cross))

    @property
    def explainable(self) -> bool:
        """The decoder also returns cross-attention weights (models exported since issue #9)."""
        return self.manifest.cross_attention is not None

    def run_decoder(
        self,
        inputs: dict[str, np.ndarray],
        past: list[Tensor],
        cross: list[Tensor],
        with_attention: bool = False,
        host_rows: np.ndarray | None = None,
        banned: np.ndarray | None = None,
    ) -> DecoderOutput:
        """One decoder call; the cross-attention output is fetched only when asked for.

        Without `host_rows` every row's logits come to the host. With it, they stay where the
        decoder left them: every row's argmax is taken there (service.runtime.token_choice) and
        only the logits of `host_rows` (ascending row indices) come back; the argmax skips the
        `banned` (row, token) pairs (int64 [K, 2])."""
        device_feeds = dict(zip(self._past_names, past, strict=True))
        device_feeds.update(zip(self._cross_names, cross, strict=True))
        fetched = ["logits"] if host_rows is None else []
        if with_attention:
            assert self.manifest.cross_attention is not None
            fetched.append(self.manifest.cross_attention.output)
        kept = self._present_names if host_rows is None else ["logits", *self._present_names]
        names = [*fetched, *kept]
        self._count_feeds(inputs)
        if self.device == "cuda":
            outputs = self._run_bound(
                self.decoder, inputs, device_feeds, names, host_outputs=len(fetched)
            )
            host = [value.numpy() for value in outputs[: len(fetched)]]
        else:
            feeds = {**inputs, **device_feeds}
            outputs = self.counters.run(lambda: self.decoder.run(names, feeds))
            host = outputs[: len(fetched)]
        self.counters.device_to_host_bytes += sum(x.nbytes for x in host)
        self.counters.kv_allocations += len(self._present_names)
        on_device = list(outputs[len(fetched) :])
        attention = np.asarray(host[-1][:, -1, :], np.float32) if with_attention else None
        if host_rows is None:
            logits = np.asarray(host[0][:, -1, :], dtype=np.float32)
            return DecoderOutput(logits, on_device, attention)
        bans = np.zeros((0, 2), np.int64) if banned is None else banned
        tokens, logits = self._argmax().run(on_device[0], host_rows, bans)
        return DecoderOutput(logits, on_device[1:], attention, tokens)

    def _argmax(self) -> DeviceArgmax:
        if self._device_argmax is None:
            (logits,) = (o for o in self.decoder.get_outputs() if o.name == "logits")
            self._device_argmax = DeviceArgmax(
                logits.type, self.device, self.device_id, self.counters
            )
        return self._device_argmax

    def _run_bound(
        self,
        session: ort.InferenceSession,
        host_feeds: dict[str, np.ndarray],
        device_feeds: dict[str, ort.OrtValue],
        outputs: list[str],
        host_outputs: int,
    ) -> list[ort.OrtValue]:
        """IOBinding run: the first `host_outputs` outputs come back to the host, the rest stay."""
        binding = session.io_binding()
        for name, value in host_feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for name, value in device_feeds.items():
            binding.bind_ortvalue_input(name, value)
        for index, name in enumerate(outputs):
            binding.bind_output(name, "cpu" if index < host_outputs else "cuda")
        self.counters.run(lambda: session.run_with_iobinding(binding))
        return binding.get_outputs()

    def _count_feeds(self, feeds: dict[str, np.ndarray]) -> None:
        self.counters.host_to_device_bytes += sum(np.asarray(x).nbytes for x in feeds.values())


def _shape(x: Tensor) -> tuple[int, ...]:
    return tuple(x.shape()) if callable(getattr(x, "shape", None)) else tuple(x.shape)
