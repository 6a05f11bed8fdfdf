"""The T5 family: t5, flan-t5 (T5 v1.1, gated-gelu), mt5.

T5 has no position embedding; its self-attention adds a learned bias looked up by the bucketed
distance between key and query positions, computed in transformers from one shared past length.
Here each row's key positions come from its own left-padded mask (cumsum - 1) and its query
positions from `position_ids`, so rows with different past lengths share one call. The
cross-attention has no position bias, only the encoder mask.
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


class T5DecoderWrapper(torch.nn.Module):
    """One decoder step over rows with their own positions, past lengths and encoder lengths.

    forward(input_ids, position_ids, self_attention_mask, encoder_attention_mask,
            past_key_0, past_value_0, ..., cross_key_0, cross_value_0, ...)
        -> (logits, present_key_0, present_value_0, ...)
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model
        self.decoder = model.get_decoder()

    def relative_position_bias(
        self, position_ids: torch.Tensor, self_attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """[B, H, T, P+T]: the bias for each row's own query and key positions (causal buckets,
        as the decoder's `bidirectional=False`). Padded key columns get a bias too; the mask
        hides them."""
        attention = self.decoder.block[0].layer[0].SelfAttention
        key_positions = torch.cumsum(self_attention_mask, dim=1) - 1  # [B, P+T]
        relative = key_positions[:, None, :] - position_ids[:, :, None]  # [B, T, P+T]
        buckets = attention._relative_position_bucket(
            relative,
            bidirectional=False,
            num_buckets=attention.relative_attention_num_buckets,
            max_distance=attention.relative_attention_max_distance,
        )
        return attention.relative_attention_bias(buckets).permute(0, 3, 1, 2)

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        self_attention_mask: torch.Tensor,
        encoder_attention_mask: torch.Tensor,
        *key_values: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        blocks = self.decoder.block
        past, cross = split_key_values(key_values, len(blocks))
        cache = filled_cache(past, cross)
        hidden = self.decoder.embed_tokens(input_ids)
        self_bias = self_attention_bias(self_attention_mask, input_ids.shape[1], hidden.dtype)
        cross_bias = encoder_attention_bias(encoder_attention_mask, hidden.dtype)
        position_bias = self.relative_position_bias(position_ids, self_attention_mask)
        for layer_idx, block in enumerate(blocks):
            hidden, _, _ = block(
                hidden,
                attention_mask=self_bias,
                position_bias=position_bias.to(hidden.dtype),
                # Only switches cross-attention on: its K/V come from the cache.
                encoder_hidden_states=cache.cross_attention_cache.layers[layer_idx].keys,
                encoder_attention_mask=cross_bias,
                cache=cache,
            )
        hidden = self.decoder.final_layer_norm(hidden)
        if self.model.config.scale_decoder_outputs:  # original T5 ties the lm head and rescales
            hidden = hidden * (self.model.config.d_model**-0.5)
        logits = self.model.lm_head(hidden)
        return (logits.float(), *present_key_values(cache))


class T5Family(TextSeq2SeqFamily):
    architecture = "t5"
    model_types = ("t5", "mt5")

    def decoder_wrapper(self, model: Any) -> torch.nn.Module:
        return T5DecoderWrapper(model).eval()

    def cross_projections(self, model: Any) -> list[tuple[torch.nn.Module, torch.nn.Module]]:
        attentions = [block.layer[1].EncDecAttention for block in model.get_decoder().block]
        return [(attention.k, attention.v) for attention in attentions]

    def num_decoder_heads(self, model: Any) -> int:
        return int(model.config.num_heads)

    def dims(self, model: Any) -> ModelDims:
        config = model.config
        return ModelDims(
            num_layers=len(model.get_decoder().block),
            num_heads=int(config.num_heads),
            head_dim=int(config.d_kv),
            hidden_size=int(config.d_model),
            vocab_size=model.lm_head.out_features,
        )

    def max_input_tokens(self, model: Any) -> int:
        """T5's relative positions have no hard limit; 512 is what it was trained on."""
        return int(getattr(model.config, "n_positions", 512) or 512)
