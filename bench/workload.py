"""What a benchmark sends: a workload spec, and the concrete requests drawn from it.

A spec names the model and task, the input length distribution (words of the bench models'
word-level tokenizers, so n words are n tokens plus the model's specials) or the image size, and
the output length distribution. Output lengths are forced (min_new_tokens = max_new_tokens), so
random-weight models do the same work as trained ones. Requests are drawn with a seeded
generator: two runs of the same spec send the same requests.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from service.runtime.tasks import Task

DISTRIBUTIONS = ("constant", "uniform")
DISTINCT_IMAGES = 8  # images are encoded up front; a few distinct ones are enough


@dataclass(frozen=True)
class Distribution:
    """An integer length: `low` always ("constant") or uniform on [low, high] ("uniform")."""

    kind: str = "constant"
    low: int = 1
    high: int = 1

    def validate(self, what: str) -> None:
        if self.kind not in DISTRIBUTIONS:
            raise ValueError(f"{what}: kind must be one of {DISTRIBUTIONS}, got {self.kind!r}")
        if self.low < 1 or (self.kind == "uniform" and self.high < self.low):
            raise ValueError(f"{what}: need 1 <= low (<= high), got {self.low}, {self.high}")

    def draw(self, rng: np.random.Generator, count: int) -> np.ndarray:
        if self.kind == "constant":
            return np.full(count, self.low)
        return rng.integers(self.low, self.high + 1, size=count)

    @property
    def mean(self) -> float:
        return float(self.low if self.kind == "constant" else (self.low + self.high) / 2)


def constant(value: int) -> Distribution:
    return Distribution("constant", value, value)


def uniform(low: int, high: int) -> Distribution:
    return Distribution("uniform", low, high)


@dataclass(frozen=True)
class WorkloadSpec:
    """One benchmark workload (see docs/benchmarks.md for the named ones)."""

    name: str
    task: str
    model: str
    output_tokens: Distribution
    input_words: Distribution = field(default_factory=lambda: constant(1))
    """Summarization: words per text (the bench tokenizers add their specials, e.g. 2 for BART)."""
    vocab_words: int = 1000
    """Words are drawn from w0 .. w{vocab_words-1}; must not exceed the model's vocabulary."""
    image_size: int = 224
    """Captioning: images are image_size x image_size random-noise PNGs."""
    seed: int = 0

    def validate(self) -> None:
        if self.task not in tuple(Task):
            raise ValueError(f"workload {self.name}: task must be one of {[str(t) for t in Task]}")
        self.output_tokens.validate(f"workload {self.name} output_tokens")
        self.input_words.validate(f"workload {self.name} input_words")
        if self.vocab_words < 1 or self.image_size < 1:
            raise ValueError(f"workload {self.name}: vocab_words and image_size must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkloadSpec:
        data = dict(data)
        for key in ("output_tokens", "input_words"):
            if key in data:
                data[key] = Distribution(**data[key])
        try:
            spec = cls(**data)
        except TypeError as exc:
            raise ValueError(f"bad workload spec: {exc}") from exc
        spec.validate()
        return spec


@dataclass(frozen=True)
class BenchRequest:
    """One request to send: its payload and the forced number of new tokens."""

    payload: str | bytes  # text to summarize or encoded image to caption
    new_tokens: int

    @property
    def params(self) -> dict[str, int]:
        """GenerationParams fields: greedy, with the output length forced."""
        return {
            "max_new_tokens": self.new_tokens,
            "min_new_tokens": self.new_tokens,
            "num_beams": 1,
        }


def make_requests(spec: WorkloadSpec, count: int) -> list[BenchRequest]:
    """`count` requests drawn from `spec` (the same ones for the same spec and count)."""
    rng = np.random.default_rng(spec.seed)
    outputs = spec.output_tokens.draw(rng, count)
    if spec.task == Task.CAPTIONING:
        images = [_noise_png(rng, spec.image_size) for _ in range(min(count, DISTINCT_IMAGES))]
        payloads: list[str | bytes] = [images[i % len(images)] for i in range(count)]
    else:
        lengths = spec.input_words.draw(rng, count)
        payloads = [
            " ".join(f"w{i}" for i in rng.integers(0, spec.vocab_words, size=n)) for n in lengths
        ]
    return [BenchRequest(p, int(n)) for p, n in zip(payloads, outputs, strict=True)]


def _noise_png(rng: np.random.Generator, size: int) -> bytes:
    pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def load_workload(name_or_path: str) -> WorkloadSpec:
    """A named workload (WORKLOADS) or a JSON spec file with WorkloadSpec's fields."""
    if name_or_path in WORKLOADS:
        return WORKLOADS[name_or_path]
    path = Path(name_or_path)
    if not path.is_file():
        known = ", ".join(WORKLOADS)
        raise ValueError(f"no workload {name_or_path!r}: name one of {known} or a JSON spec file")
    return WorkloadSpec.from_dict(json.loads(path.read_text()))


WORKLOADS: dict[str, WorkloadSpec] = {
    w.name: w
    for w in (
        # W1: 512 input tokens (510 words + <s> </s>), 64 new tokens, greedy.
        WorkloadSpec("W1", "summarization", "bart-base", constant(64), constant(510), 50000),
        # W2: 224x224 images, 24 new tokens.
        WorkloadSpec("W2", "captioning", "vit-gpt2", constant(24), image_size=224),
        # W3: mixed lengths under load.
        WorkloadSpec("W3", "summarization", "bart-base", uniform(16, 128), uniform(62, 510), 50000),
        # W4: W3's inputs, 64 forced new tokens: streams that stall while newcomers are encoded.
        WorkloadSpec("W4", "summarization", "bart-base", constant(64), uniform(62, 510), 50000),
        WorkloadSpec("W1-t5", "summarization", "t5-small", constant(64), constant(511), 32000),
        # W1 on the larger shapes (`attnserve bench single`).
        WorkloadSpec(
            "W1-large", "summarization", "bart-large-cnn", constant(64), constant(510), 50000
        ),
        WorkloadSpec("W1-t5base", "summarization", "t5-base", constant(64), constant(511), 32000),
        # Quick versions on the tiny BART (make bench-quick, tests).
        WorkloadSpec("Q1", "summarization", "bart-tiny", constant(32), constant(126), 1000),
        WorkloadSpec("Q3", "summarization", "bart-tiny", uniform(8, 48), uniform(30, 254), 1000),
    )
}
