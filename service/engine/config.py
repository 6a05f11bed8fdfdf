"""Engine settings: one typed dataclass, checked once at start-up."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property

from service.runtime.cores import (
    CoreSplit,
    PinningUnavailable,
    allowed_cpus,
    cpu_quota,
    cpus_of,
    plan_split,
    quota_threads,
)
from service.runtime.sessions import SessionThreads

log = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda")
ADMISSIONS = ("continuous", "static")
DEVICE_ARGMAX = ("auto", "on", "off")
SPINNING = ("auto", "on", "off")
PIN_CORES = ("auto", "on", "off")


@dataclass
class EngineConfig:
    """Limits and runtime choices of the generation engine (all models share them)."""

    device: str = "cpu"
    """Where ONNX Runtime runs the graphs: "cpu" or "cuda" (CUDA execution provider)."""
    intra_op_threads: int = 0
    """Threads ONNX Runtime uses inside one operator; 0 = the process's CPU quota rounded up
    where it is below the CPUs it may use (a container's CPU limit), else ONNX Runtime's choice
    (one per core). The decoder's, and the encoder's unless encoder_threads is set."""
    encoder_threads: int | None = None
    """Intra-op threads of the encoder sessions; None or 0 = the encoder's cores where they are
    split from the decoder's (pin_cores), else as the decoder's."""
    encoder_nice: int = 0
    """Nice value added to the thread that runs encoders beside the decode steps (0-19): the
    kernel then gives the decoder's threads the cores first. Whole encoder runs are on that
    thread only with encoder_threads=1 (ONNX Runtime's own pool threads keep their priority)."""
    spinning: str = "auto"
    """Whether ONNX Runtime's idle pool threads busy-wait for the next operator: "on", "off",
    or "auto" = off when encoders run beside the decode steps (spinning threads of one
    session take the cores the other's need), on otherwise. See docs/benchmarks.md."""
    pin_cores: str = "auto"
    """Whether the encoder beside the steps and the decoder's pool threads run on cores of their
    own (service/runtime/cores.py): "on" (refused where it cannot be done), "off", or "auto" =
    on where encoders run beside the steps on the CPU, no thread count is set, and the process
    has at least two CPUs not shared through a CPU quota. See docs/benchmarks.md."""
    max_batch_rows: int = 32
    """Decoder rows in one step; a beam-search request takes num_beams rows."""
    max_queue: int = 256
    """Requests allowed to wait for admission; one more is refused with ResourceExhausted."""
    max_num_beams: int = 8
    """Largest num_beams a request may ask for."""
    max_new_tokens_cap: int = 512
    """Largest max_new_tokens a request may ask for (model defaults above it are clamped)."""
    kv_budget_bytes: int = 2 << 30
    """Bytes of self- and cross-attention K/V the running rows may reserve at their peak."""
    max_image_pixels: int = 40_000_000
    """Largest width * height of an image input, checked before decoding (decompression bombs)."""
    max_image_bytes: int = 20 << 20
    """Largest encoded image input, in bytes."""
    prep_workers: int = 2
    """Threads that prepare requests (tokenize texts, decode images) off the event loop; at
    most this many inputs are being decoded at once, which bounds their peak memory."""
    max_input_bytes: int = 1 << 20
    """Largest request text in UTF-8 bytes, refused at the API edge before any work (images
    have max_image_bytes). Texts above the model's token limit are refused or truncated."""
    max_batch_elements: int = 64
    """Largest number of inputs (texts or images) in one KServe inference call."""
    truncate: int = 0
    """Default of GenerationParams.truncate: 0 = refuse texts longer than the model accepts; N
    = keep their first N tokens (at most the model's maximum)."""
    max_encoder_tokens_per_step: int = 512
    """Encoder tokens one step may run for its newcomers (newcomers x the longest one's input
    tokens; image patches for captioners) before its decoder call, which every running stream
    waits for; a request over it is admitted alone. 0 = no limit. See docs/benchmarks.md."""
    encoder_beside_decode: bool = True
    """Run newcomers' encoders on a thread beside the decode steps instead of inside them: the
    running streams keep decoding (more slowly) while a newcomer is encoded, and it joins the
    batch at the first step after its encoder finished. On by default: it measured better on
    every inter-token gap figure and on tokens/s (docs/benchmarks.md)."""
    admission: str = "continuous"
    """"continuous": waiting requests join the running batch at any step; "static": only when
    the batch is empty (request-level batching, kept as a benchmark baseline)."""

    device_argmax: str = "auto"
    """Where plain greedy rows' tokens are chosen: "on" = an argmax graph next to the logits,
    so only token ids (and other rows' logits) cross to the host; "off" = numpy on the host over
    every row's logits; "auto" = on for cuda, off for cpu (on the CPU the graph measured no
    faster, docs/benchmarks.md "Token choice on the device")."""

    def session_threads(self) -> SessionThreads:
        """The thread settings of every model's ONNX Runtime sessions. A count left at 0 (or
        an unset encoder_threads) follows the core split where there is one, else the CPU
        quota (service/runtime/cores.py); the encoder's otherwise follows the decoder's."""
        spinning = self.spinning == "on" or (
            self.spinning == "auto" and not self.encoder_beside_decode
        )
        split = self.core_split
        if split is None:
            decoder = self.intra_op_threads or quota_threads(*self._cpus)
            return SessionThreads(decoder, self.encoder_threads or decoder, spinning)
        return SessionThreads(
            self.intra_op_threads or len(split.decoder) + 1,  # + the thread that calls it
            self.encoder_threads or len(split.encoder),
            spinning,
            split.decoder,
            split.encoder,
        )

    @cached_property
    def _cpus(self) -> tuple[list[int], float | None]:
        """The CPUs this process may use and its CPU quota, read once (at start)."""
        return allowed_cpus(), cpu_quota()

    @cached_property
    def core_split(self) -> CoreSplit | None:
        """The physical cores of the decoder's pool threads and of the encoder beside the
        steps (pin_cores), None = not pinned; decided once, at start, and logged either way."""
        if self.pin_cores == "off":
            return None
        skip = self._auto_skips()
        if self.pin_cores == "auto" and skip:
            log.info("threads not pinned to cores: %s (pin_cores auto)", skip)
            return None
        try:
            split = plan_split(*self._cpus)
        except PinningUnavailable as exc:
            if self.pin_cores == "on":
                raise ValueError(f"pin_cores is on, but {exc}") from exc
            log.info("threads not pinned to cores: %s", exc)
            return None
        log.info(
            "the decoder's pool threads pinned to CPUs %s (the thread calling it unpinned), "
            "the encoder beside the steps to CPUs %s",
            *(sorted(cpus_of(split.decoder)), sorted(cpus_of(split.encoder))),
        )
        return split

    def _auto_skips(self) -> str:
        """Why pin_cores "auto" leaves threads unpinned, "" if it does not."""
        if self.device != "cpu":
            return f"device {self.device}"
        if not self.encoder_beside_decode:
            return "encoders run inside the steps"
        if self.intra_op_threads or self.encoder_threads is not None:
            return "thread counts set by hand (intra_op_threads / encoder_threads)"
        return ""

    def decide_core_split(self) -> None:
        """Decide the core split now (at start), so that "on" where it cannot be done is
        refused before any model loads."""
        _ = self.core_split

    def uses_device_argmax(self) -> bool:
        return self.device_argmax == "on" or (
            self.device_argmax == "auto" and self.device == "cuda"
        )

    def validate(self) -> None:
        """Reject settings the engine cannot run with, naming the setting."""
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.admission not in ADMISSIONS:
            raise ValueError(f"admission must be one of {ADMISSIONS}, got {self.admission!r}")
        if self.device_argmax not in DEVICE_ARGMAX:
            raise ValueError(
                f"device_argmax must be one of {DEVICE_ARGMAX}, got {self.device_argmax!r}"
            )
        if self.truncate < 0:
            raise ValueError(f"truncate must be >= 0 (0 = refuse long inputs), got {self.truncate}")
        if self.spinning not in SPINNING:
            raise ValueError(f"spinning must be one of {SPINNING}, got {self.spinning!r}")
        if self.pin_cores not in PIN_CORES:
            raise ValueError(f"pin_cores must be one of {PIN_CORES}, got {self.pin_cores!r}")
        if self.pin_cores == "on" and (self.device != "cpu" or not self.encoder_beside_decode):
            raise ValueError(
                "pin_cores 'on' splits the CPU's cores between the decoder and the encoders "
                "beside the steps: it needs device 'cpu' and encoder_beside_decode"
            )
        if self.intra_op_threads < 0:
            raise ValueError("intra_op_threads must be >= 0 (0 = ONNX Runtime default)")
        if self.encoder_threads is not None and self.encoder_threads < 0:
            raise ValueError("encoder_threads must be >= 0 (0 = as the decoder's)")
        if not 0 <= self.encoder_nice <= 19:
            raise ValueError(f"encoder_nice must be within 0..19, got {self.encoder_nice}")
        if self.max_encoder_tokens_per_step < 0:
            raise ValueError("max_encoder_tokens_per_step must be >= 0 (0 = no limit)")
        positive = {
            "max_batch_rows": self.max_batch_rows,
            "max_queue": self.max_queue,
            "max_num_beams": self.max_num_beams,
            "max_new_tokens_cap": self.max_new_tokens_cap,
            "kv_budget_bytes": self.kv_budget_bytes,
            "max_image_pixels": self.max_image_pixels,
            "max_image_bytes": self.max_image_bytes,
            "prep_workers": self.prep_workers,
            "max_input_bytes": self.max_input_bytes,
            "max_batch_elements": self.max_batch_elements,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if self.max_num_beams > self.max_batch_rows:
            raise ValueError(
                f"max_num_beams ({self.max_num_beams}) cannot exceed max_batch_rows "
                f"({self.max_batch_rows}): a beam request must fit in one batch"
            )
        self.decide_core_split()
