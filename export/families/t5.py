"""The T5 family: t5, flan-t5 (T5 v1.1, gated-gelu), mt5.

T5 has no position embedding; its self-attention adds a learned bias looked up by the bucketed
distance between key and query positions, computed in transformers from one shared past length.
Here each row's key positions come from its own left-padded mask (cumsum - 1) and its query
positions from `position_ids`, so rows with different past lengths share one call. The
cross-attention has no position bias, only the encoder mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from export.families.decoder_inputs import DecoderLayerInputs
from export.families.text_seq2seq import Seq2SeqDecoderWrapper, TextSeq2SeqFamily
from service.runtime.manifest import ModelDims


class T5DecoderWrapper(Seq2SeqDecoderWrapper):
    """T5-family decoder step: the relative position bias is computed here per row."""

    @property
    def num_layers(self) -> int:
        return len(self.decoder.block)

    def cross_attention_modules(self) -> list[torch.nn.Module]:
        return [block.layer[1].EncDecAttention for block in self.decoder.block]

    def embed(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        return self.decoder.embed_tokens(input_ids)  # no position embedding: a relative bias

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

    def run_layers(self, hidden: torch.Tensor, step: DecoderLayerInputs) -> torch.Tensor:
        position_bias = self.relative_position_bias(step.position_ids, step.self_attention_mask)
        for layer_idx, block in enumerate(self.decoder.block):
            hidden, _, _ = block(
                hidden,
                attention_mask=step.self_bias,
                position_bias=position_bias.to(hidden.dtype),
                encoder_hidden_states=step.cross_marker(layer_idx),
                encoder_attention_mask=step.cross_bias,
                cache=step.cache,
            )
        return self.decoder.final_layer_norm(hidden)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.model.config.scale_decoder_outputs:  # original T5 ties the lm head and rescales
            hidden = hidden * (self.model.config.d_model**-0.5)
        return self.model.lm_head(hidden)


class T5Family(TextSeq2SeqFamily):
    architecture = "t5"
    model_types = ("t5", "mt5")

    def decoder_wrapper(
        self, model: Any, attention_layers: Sequence[int] | None = None
    ) -> torch.nn.Module:
        return T5DecoderWrapper(model, attention_layers).eval()

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

    def max_decoder_positions(self, model: Any) -> int | None:
        return None  # relative position buckets: no table to run past
