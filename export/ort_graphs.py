"""The exported graphs run with ONNX Runtime, in the graph contract's terms, for export checks.

The server has its own runtime and engine; this is the smallest loop that lets the exporter
compare the graphs with PyTorch (logits) and with `generate()` (greedy tokens), and a lower
precision with fp32, without depending on the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from export.onnx_export import (
    CROSS_ATTENTION_OUTPUT,
    DECODER_FILE,
    ENCODER_FILE,
    key_value_names,
)
from service.runtime.manifest import ModelDims

_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


@dataclass
class DecoderStep:
    """One decoder call's inputs: T new tokens per row over a left-padded past."""

    input_ids: np.ndarray  # [B, T]
    position_ids: np.ndarray  # [B, T]
    self_attention_mask: np.ndarray  # [B, P + T]
    encoder_attention_mask: np.ndarray  # [B, S]
    past: list[np.ndarray]  # past_key_0, past_value_0, ... each [B, H, P, Dh]
    cross: list[np.ndarray]  # cross_key_0, cross_value_0, ... each [B, H, S, Dh]

    def feeds(self, num_layers: int) -> dict[str, np.ndarray]:
        feeds = {
            "input_ids": self.input_ids,
            "position_ids": self.position_ids,
            "self_attention_mask": self.self_attention_mask,
            "encoder_attention_mask": self.encoder_attention_mask,
        }
        feeds |= dict(zip(key_value_names("past", num_layers), self.past, strict=True))
        return feeds | dict(zip(key_value_names("cross", num_layers), self.cross, strict=True))


class OrtGraphs:
    """encoder.onnx and decoder.onnx of one model directory, on the CPU."""

    def __init__(self, model_dir: Path, dims: ModelDims) -> None:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        self.encoder = ort.InferenceSession(str(model_dir / ENCODER_FILE), options, providers)
        self.decoder = ort.InferenceSession(str(model_dir / DECODER_FILE), options, providers)
        self.dims = dims
        self._step_outputs = ["logits", *key_value_names("present", dims.num_layers)]
        self.float_type = _NUMPY_TYPES[self.decoder.get_inputs()[-1].type]  # a cross K/V input

    def run_encoder(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """encoder_hidden_states, cross_key_0, cross_value_0, ..."""
        inputs = {i.name: feeds[i.name] for i in self.encoder.get_inputs()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].astype(self.float_type)
        return self.encoder.run(None, inputs)

    def run_decoder(self, step: DecoderStep) -> tuple[np.ndarray, list[np.ndarray]]:
        """(logits [B, T, V] as float32, present K/V)."""
        logits, *presents = self.decoder.run(self._step_outputs, self._decoder_feeds(step))
        return logits.astype(np.float32), presents

    def run_cross_attention(self, step: DecoderStep) -> np.ndarray:
        """The decoder's cross_attention output [B, T, S] for the step."""
        (weights,) = self.decoder.run([CROSS_ATTENTION_OUTPUT], self._decoder_feeds(step))
        return weights

    def _decoder_feeds(self, step: DecoderStep) -> dict[str, np.ndarray]:
        feeds = step.feeds(self.dims.num_layers)
        for name in key_value_names("past", self.dims.num_layers):
            feeds[name] = feeds[name].astype(self.float_type)
        return feeds

    def empty_past(self, rows: int) -> list[np.ndarray]:
        shape = (rows, self.dims.num_heads, 0, self.dims.head_dim)
        return [np.zeros(shape, self.float_type) for _ in range(2 * self.dims.num_layers)]


def encoder_mask(feeds: dict[str, np.ndarray], encoder_states: np.ndarray) -> np.ndarray:
    """The text attention mask, or all ones over an image encoder's states."""
    if "attention_mask" in feeds:
        return feeds["attention_mask"].astype(np.int64)
    return np.ones(encoder_states.shape[:2], dtype=np.int64)


def greedy_tokens(
    graphs: OrtGraphs,
    encoder_feeds: dict[str, np.ndarray],
    prefix: list[int],
    eos: list[int],
    max_new_tokens: int,
) -> list[list[int]]:
    """Each row's greedy continuation of `prefix` (the decoder start and any prompt), up to and
    including its first eos, all rows in one batch."""
    states, *cross = graphs.run_encoder(encoder_feeds)
    rows = states.shape[0]
    new_ids = np.tile(np.asarray(prefix, dtype=np.int64), (rows, 1))
    step = DecoderStep(
        input_ids=new_ids,
        position_ids=np.tile(np.arange(len(prefix), dtype=np.int64), (rows, 1)),
        self_attention_mask=np.ones((rows, len(prefix)), dtype=np.int64),
        encoder_attention_mask=encoder_mask(encoder_feeds, states),
        past=graphs.empty_past(rows),
        cross=cross,
    )
    generated: list[list[int]] = [[] for _ in range(rows)]
    finished = np.zeros(rows, dtype=bool)
    for _ in range(max_new_tokens):
        logits, presents = graphs.run_decoder(step)
        chosen = logits[:, -1].argmax(axis=-1)
        for row in np.flatnonzero(~finished):
            generated[row].append(int(chosen[row]))
        finished |= np.isin(chosen, eos)
        if finished.all():
            break
        total = step.self_attention_mask.shape[1]
        step.input_ids = chosen[:, None].astype(np.int64)
        step.position_ids = np.full((rows, 1), total, dtype=np.int64)
        step.self_attention_mask = np.ones((rows, total + 1), dtype=np.int64)
        step.past = presents
    return generated
