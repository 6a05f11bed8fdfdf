"""What the text-to-text families (BART, T5) share: the encoder wrapper, the decoder wrapper's
hold on the model, and the special tokens.

Both run their own encoder over right-padded `input_ids` and then project the final states once
through every decoder layer's cross-attention key/value weights, so the decoder graph never
touches encoder states. They differ only in where those projections live and in the decoder step.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

import torch

from export.families.base import ExportFamily, first_set
from export.families.decoder_inputs import DecoderStepWrapper, split_heads
from service.runtime.manifest import SpecialTokens
from service.runtime.tasks import Task


class TextEncoderWrapper(torch.nn.Module):
    """forward(input_ids, attention_mask) -> (encoder_hidden_states, cross_key_0, cross_value_0,
    ...), the cross K/V as [B, H, S, Dh]."""

    def __init__(
        self,
        encoder: torch.nn.Module,
        cross_projections: list[tuple[torch.nn.Module, torch.nn.Module]],
        num_heads: int,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.key_projections = torch.nn.ModuleList(key for key, _ in cross_projections)
        self.value_projections = torch.nn.ModuleList(value for _, value in cross_projections)
        self.num_heads = num_heads

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        cross: list[torch.Tensor] = []
        for key, value in zip(self.key_projections, self.value_projections, strict=True):
            cross += [split_heads(key(states), self.num_heads)]
            cross += [split_heads(value(states), self.num_heads)]
        return (states, *cross)


class Seq2SeqDecoderWrapper(DecoderStepWrapper):
    """The decoder step of a transformers seq2seq model, whose lm head lives on the model."""

    def __init__(self, model: Any, attention_layers: Sequence[int] | None = None) -> None:
        super().__init__(attention_layers)
        self.model = model
        self.decoder = model.get_decoder()


class TextSeq2SeqFamily(ExportFamily):
    task = Task.SUMMARIZATION

    @abstractmethod
    def cross_projections(self, model: Any) -> list[tuple[torch.nn.Module, torch.nn.Module]]:
        """Each decoder layer's cross-attention (key, value) projection modules."""

    @abstractmethod
    def num_decoder_heads(self, model: Any) -> int: ...

    def encoder_wrapper(self, model: Any) -> torch.nn.Module:
        return TextEncoderWrapper(
            model.get_encoder(), self.cross_projections(model), self.num_decoder_heads(model)
        ).eval()

    def special_tokens(self, model: Any) -> SpecialTokens:
        """The ids generate() uses: the generation config first, then the model config."""
        sources = (self.generation_config(model), model.config)
        decoder_start = first_set(sources, "decoder_start_token_id")
        eos = first_set(sources, "eos_token_id")
        pad = first_set(sources, "pad_token_id")
        if decoder_start is None or eos is None or pad is None:
            raise ValueError("the checkpoint defines no decoder_start/eos/pad token id")
        bos = first_set(sources, "bos_token_id")
        return SpecialTokens(
            pad=int(pad),
            eos=[int(eos)] if isinstance(eos, int) else [int(i) for i in eos],
            decoder_start=int(decoder_start),
            bos=None if bos is None else int(bos),
        )
