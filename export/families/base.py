"""What the exporter needs from one model family (BART, T5, VisionEncoderDecoder, BLIP).

A family knows how to wrap a transformers model into two export-only modules with flat tensor
inputs and outputs that follow docs/graph-contract.md, and how to describe the model in the
manifest. Everything else (tracing, ONNX checks, parity, the manifest, the atomic write) is
shared by all families in export/.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch

from service.runtime.manifest import ImagePreprocessing, ModelDims, SpecialTokens
from service.runtime.tasks import Task


class ExportFamily(ABC):
    architecture: str  # the manifest's architecture value
    model_types: tuple[str, ...]  # transformers config.model_type values this family handles
    task: Task

    @abstractmethod
    def encoder_wrapper(self, model: Any) -> torch.nn.Module:
        """forward(input_ids, attention_mask) or forward(pixel_values) ->
        (encoder_hidden_states, cross_key_0, cross_value_0, ..., cross_value_{L-1}).
        """

    @abstractmethod
    def decoder_wrapper(
        self, model: Any, attention_layers: Sequence[int] | None = None
    ) -> torch.nn.Module:
        """forward(input_ids, position_ids, self_attention_mask, encoder_attention_mask,
        past_key_0, past_value_0, ..., cross_key_0, cross_value_0, ...) ->
        (logits, present_key_0, present_value_0, ..., cross_attention), the cross-attention
        averaged over heads and `attention_layers` (None: all decoder layers).
        """

    @abstractmethod
    def dims(self, model: Any) -> ModelDims: ...

    @abstractmethod
    def special_tokens(self, model: Any) -> SpecialTokens: ...

    def reference_cross_attentions(
        self, model: Any, inputs: dict[str, torch.Tensor], decoder_input_ids: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """transformers' own cross-attention weights, one [B, H, T, S] per decoder layer, from the
        model's forward with output_attentions=True: the reference for the graph's output."""
        outputs = model(**inputs, decoder_input_ids=decoder_input_ids, output_attentions=True)
        return outputs.cross_attentions

    def generation_config(self, model: Any) -> Any:
        """The GenerationConfig whose settings `model.generate()` actually applies."""
        return model.generation_config

    def max_input_tokens(self, model: Any) -> int:
        """Longest text input (text families) or the encoder length (image families)."""
        return int(getattr(model.config, "max_position_embeddings", 512))

    def max_decoder_positions(self, model: Any) -> int | None:
        """How many decoder tokens (prompt included) the decoder's position table holds; None
        where positions are relative and have no hard limit."""
        return int(model.config.max_position_embeddings)

    def decoder_prompt(self, model: Any) -> list[int]:
        """Tokens every decoder sequence starts with after decoder_start (BLIP's prompt)."""
        return []

    def patch_grid(self, model: Any) -> tuple[int, int] | None:
        """Image families: (rows, cols) of the vision encoder's patch grid; None for text."""
        return None

    def image_preprocessing(self, model_dir: str) -> ImagePreprocessing | None:
        """Image families: the resize/normalise settings read from the checkpoint's processor."""
        return None


def first_set(sources: tuple[Any, ...], name: str) -> Any:
    """The first non-None `name` among config objects, in the order transformers consults them."""
    for source in sources:
        value = getattr(source, name, None)
        if value is not None:
            return value
    return None
