"""What the text-to-text families (BART, T5) share: the encoder wrapper and the special tokens.

Both run their own encoder over right-padded `input_ids` and then project the final states once
through every decoder layer's cross-attention key/value weights, so the decoder graph never
touches encoder states. They differ only in where those projections live and in the decoder step.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch

from export.families.base import ExportFamily
from service.runtime.manifest import SpecialTokens


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


def split_heads(states: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[B, S, H*Dh] -> [B, H, S, Dh]."""
    batch, length, _ = states.shape
    return states.view(batch, length, num_heads, -1).transpose(1, 2)


def split_key_values(
    key_values: tuple[torch.Tensor, ...], num_layers: int
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[tuple[torch.Tensor, torch.Tensor]]]:
    """The decoder graph's flat (past_key_0, past_value_0, ..., cross_key_0, ...) as
    (past pairs, cross pairs)."""
    pairs = list(zip(key_values[0::2], key_values[1::2], strict=True))
    if len(pairs) != 2 * num_layers:
        raise ValueError(f"expected {4 * num_layers} key/value tensors, got {len(key_values)}")
    return pairs[:num_layers], pairs[num_layers:]


class TextSeq2SeqFamily(ExportFamily):
    task = "summarization"

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
        sources = (model.generation_config, model.config)
        decoder_start = _first(sources, "decoder_start_token_id")
        eos = _first(sources, "eos_token_id")
        pad = _first(sources, "pad_token_id")
        if decoder_start is None or eos is None or pad is None:
            raise ValueError("the checkpoint defines no decoder_start/eos/pad token id")
        bos = _first(sources, "bos_token_id")
        return SpecialTokens(
            pad=int(pad),
            eos=[int(eos)] if isinstance(eos, int) else [int(i) for i in eos],
            decoder_start=int(decoder_start),
            bos=None if bos is None else int(bos),
        )


def _first(sources: tuple[Any, ...], name: str) -> Any:
    for source in sources:
        value = getattr(source, name, None)
        if value is not None:
            return value
    return None
