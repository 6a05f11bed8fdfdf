"""The BART family: bart (and distilbart), mbart, pegasus, marian.

They share one decoder structure and differ only in the embedding step (learned positions offset
by 2 for bart/mbart, sinusoidal for pegasus/marian; a token scale in the embedding or in the
decoder; a LayerNorm after the embedding or not) and in a final LayerNorm (pegasus, mbart).
Their decoders add `arange(T) + past_length` positions, one value for the whole batch, so the
wrapper embeds per-row `position_ids` itself and calls the decoder layers with 4-D masks.
"""

from __future__ import annotations

from typing import Any

import torch

from export.families.decoder_inputs import (
    encoder_attention_bias,
    filled_cache,
    present_key_values,
    self_attention_bias,
)
from export.families.text_seq2seq import TextSeq2SeqFamily, split_key_values
from service.runtime.manifest import ModelDims


class BartDecoderWrapper(torch.nn.Module):
    """One decoder step over rows with their own positions, past lengths and encoder lengths.

    forward(input_ids, position_ids, self_attention_mask, encoder_attention_mask,
            past_key_0, past_value_0, ..., cross_key_0, cross_value_0, ...)
        -> (logits, present_key_0, present_value_0, ...)
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model
        self.decoder = model.get_decoder()

    def embed(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """Token embedding (scaled where the model scales it) plus the per-row position rows."""
        decoder = self.decoder
        tokens = decoder.embed_tokens(input_ids) * getattr(decoder, "embed_scale", 1.0)
        table = decoder.embed_positions
        offset = getattr(table, "offset", 0)  # bart/mbart learned tables start at row 2
        positions = torch.nn.functional.embedding(position_ids + offset, table.weight)
        hidden = tokens + positions.to(tokens.dtype)
        norm = getattr(decoder, "layernorm_embedding", None)
        return hidden if norm is None else norm(hidden)

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        self_attention_mask: torch.Tensor,
        encoder_attention_mask: torch.Tensor,
        *key_values: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        layers = self.decoder.layers
        past, cross = split_key_values(key_values, len(layers))
        cache = filled_cache(past, cross)
        hidden = self.embed(input_ids, position_ids)
        self_bias = self_attention_bias(self_attention_mask, input_ids.shape[1], hidden.dtype)
        cross_bias = encoder_attention_bias(encoder_attention_mask, hidden.dtype)
        for layer_idx, layer in enumerate(layers):
            hidden = layer(
                hidden,
                attention_mask=self_bias,
                # Only switches cross-attention on: its K/V come from the cache.
                encoder_hidden_states=cache.cross_attention_cache.layers[layer_idx].keys,
                encoder_attention_mask=cross_bias,
                cache=cache,
            )
        final_norm = getattr(self.decoder, "layer_norm", None)
        if final_norm is not None:
            hidden = final_norm(hidden)
        logits = self.model.lm_head(hidden) + self.model.final_logits_bias
        return (logits.float(), *present_key_values(cache))


class BartFamily(TextSeq2SeqFamily):
    architecture = "bart"
    model_types = ("bart", "mbart", "pegasus", "marian")

    def decoder_wrapper(self, model: Any) -> torch.nn.Module:
        return BartDecoderWrapper(model).eval()

    def cross_projections(self, model: Any) -> list[tuple[torch.nn.Module, torch.nn.Module]]:
        return [
            (layer.encoder_attn.k_proj, layer.encoder_attn.v_proj)
            for layer in model.get_decoder().layers
        ]

    def num_decoder_heads(self, model: Any) -> int:
        return int(model.config.decoder_attention_heads)

    def dims(self, model: Any) -> ModelDims:
        config = model.config
        heads = self.num_decoder_heads(model)
        return ModelDims(
            num_layers=len(model.get_decoder().layers),
            num_heads=heads,
            head_dim=config.d_model // heads,
            hidden_size=config.d_model,
            vocab_size=model.lm_head.out_features,
        )
