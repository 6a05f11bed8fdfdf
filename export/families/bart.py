"""The BART family: bart (and distilbart), mbart, pegasus, marian.

They share one decoder structure and differ only in the embedding step (learned positions offset
by 2 for bart/mbart, sinusoidal for pegasus/marian; a token scale in the embedding or in the
decoder; a LayerNorm after the embedding or not) and in a final LayerNorm (pegasus, mbart).
Their decoders add `arange(T) + past_length` positions, one value for the whole batch, so the
wrapper embeds per-row `position_ids` itself and calls the decoder layers with 4-D masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from export.families.decoder_inputs import DecoderLayerInputs
from export.families.text_seq2seq import Seq2SeqDecoderWrapper, TextSeq2SeqFamily
from service.runtime.manifest import ModelDims


class BartDecoderWrapper(Seq2SeqDecoderWrapper):
    """BART-family decoder step: the embedding is computed here from per-row position ids."""

    @property
    def num_layers(self) -> int:
        return len(self.decoder.layers)

    def cross_attention_modules(self) -> list[torch.nn.Module]:
        return [layer.encoder_attn for layer in self.decoder.layers]

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

    def run_layers(self, hidden: torch.Tensor, step: DecoderLayerInputs) -> torch.Tensor:
        for layer_idx, layer in enumerate(self.decoder.layers):
            hidden = layer(
                hidden,
                attention_mask=step.self_bias,
                encoder_hidden_states=step.cross_marker(layer_idx),
                encoder_attention_mask=step.cross_bias,
                cache=step.cache,
            )
        final_norm = getattr(self.decoder, "layer_norm", None)
        return hidden if final_norm is None else final_norm(hidden)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(hidden) + self.model.final_logits_bias


class BartFamily(TextSeq2SeqFamily):
    architecture = "bart"
    model_types = ("bart", "mbart", "pegasus", "marian")

    def decoder_wrapper(
        self, model: Any, attention_layers: Sequence[int] | None = None
    ) -> torch.nn.Module:
        return BartDecoderWrapper(model, attention_layers).eval()

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
