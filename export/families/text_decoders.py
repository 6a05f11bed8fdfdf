"""The text decoders that image captioners put behind their vision encoder, seen through one face.

The captioning wrappers need four things from a decoder: the token + per-row position embedding,
one layer step with 4-D self- and cross-attention biases and a filled cache, the head that turns
hidden states into logits, and each layer's cross-attention K/V projection of the encoder states.
GPT-2 and the BERT-style decoders (BERT's LM head model, BLIP's text decoder) differ only in where
those live.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from transformers import BertLMHeadModel, BlipTextLMHeadModel, GPT2LMHeadModel

from export.families.decoder_inputs import DecoderLayerInputs, split_heads
from service.runtime.manifest import ModelDims


class TextDecoder(ABC):
    """One decoder model with cross-attention, as the captioning wrappers use it."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    @property
    @abstractmethod
    def layers(self) -> torch.nn.ModuleList: ...

    @property
    def num_heads(self) -> int:
        return int(self.model.config.num_attention_heads)

    @abstractmethod
    def embed(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor: ...

    def run_layer(
        self, layer_idx: int, hidden: torch.Tensor, step: DecoderLayerInputs
    ) -> torch.Tensor:
        """One decoder layer, its cross-attention K/V taken from the step's cache."""
        return self.layers[layer_idx](
            hidden,
            attention_mask=step.self_bias,
            encoder_hidden_states=step.cross_marker(layer_idx),
            encoder_attention_mask=step.cross_bias,
            cache=step.cache,
        )

    @abstractmethod
    def logits(self, hidden_states: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def cross_attention(self, layer_idx: int) -> torch.nn.Module:
        """The layer's cross-attention module whose output ends with its softmax weights."""

    @abstractmethod
    def cross_key_value(self, layer_idx: int, encoder_states: torch.Tensor):
        """The projected cross-attention (key, value) of one layer, each [B, H, S, Dh]."""

    def dims(self) -> ModelDims:
        config = self.model.config
        return ModelDims(
            num_layers=len(self.layers),
            num_heads=self.num_heads,
            head_dim=config.hidden_size // self.num_heads,
            hidden_size=config.hidden_size,
            vocab_size=config.vocab_size,
        )


class Gpt2Decoder(TextDecoder):
    """GPT2LMHeadModel with add_cross_attention: learned absolute positions taken per row."""

    @property
    def layers(self) -> torch.nn.ModuleList:
        return self.model.transformer.h

    def embed(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        transformer = self.model.transformer
        return transformer.wte(input_ids) + transformer.wpe(position_ids)

    def logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(self.model.transformer.ln_f(hidden_states))

    def cross_attention(self, layer_idx: int) -> torch.nn.Module:
        return self.layers[layer_idx].crossattention

    def cross_key_value(self, layer_idx: int, encoder_states: torch.Tensor):
        attention = self.cross_attention(layer_idx)
        keys, values = attention.c_attn(encoder_states).split(attention.split_size, dim=2)
        return split_heads(keys, self.num_heads), split_heads(values, self.num_heads)


class BertStyleDecoder(TextDecoder):
    """BertLMHeadModel or BlipTextLMHeadModel: embeddings (with their LayerNorm) from per-row
    position ids, post-norm layers, and an MLM-style prediction head."""

    @property
    def layers(self) -> torch.nn.ModuleList:
        return self.model.bert.encoder.layer

    def embed(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        return self.model.bert.embeddings(input_ids=input_ids, position_ids=position_ids)

    def logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.model.cls(hidden_states)

    def cross_attention(self, layer_idx: int) -> torch.nn.Module:
        return self.layers[layer_idx].crossattention.self

    def cross_key_value(self, layer_idx: int, encoder_states: torch.Tensor):
        attention = self.cross_attention(layer_idx)
        keys, values = attention.key(encoder_states), attention.value(encoder_states)
        return split_heads(keys, self.num_heads), split_heads(values, self.num_heads)


class BlipTextDecoder(BertStyleDecoder):
    """BlipTextLMHeadModel. Its BlipTextAttention drops encoder_attention_mask before the
    cross-attention (transformers 5.24), so the layer's parts are called here with the mask:
    rows whose encoder K/V are right-padded must not attend to the padding."""

    def run_layer(
        self, layer_idx: int, hidden: torch.Tensor, step: DecoderLayerInputs
    ) -> torch.Tensor:
        layer = self.layers[layer_idx]
        hidden, _ = layer.attention(hidden, attention_mask=step.self_bias, cache=step.cache)
        context, _ = layer.crossattention.self(
            hidden,
            encoder_hidden_states=step.cross_marker(layer_idx),
            encoder_attention_mask=step.cross_bias,
            cache=step.cache,
        )
        hidden = layer.crossattention.output(context, hidden)
        return layer.feed_forward_chunk(hidden)


_DECODERS: dict[type, type[TextDecoder]] = {
    GPT2LMHeadModel: Gpt2Decoder,
    BertLMHeadModel: BertStyleDecoder,
    BlipTextLMHeadModel: BlipTextDecoder,
}


def text_decoder_for(model: torch.nn.Module) -> TextDecoder:
    """The TextDecoder view of a decoder model, or a clear error naming the supported ones."""
    decoder_type = _DECODERS.get(type(model))
    if decoder_type is None:
        supported = ", ".join(cls.__name__ for cls in _DECODERS)
        raise ValueError(
            f"unsupported captioning decoder {type(model).__name__}; supported: {supported}"
        )
    return decoder_type(model)
