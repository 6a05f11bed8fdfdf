"""Turn the graph contract's flat tensors into what transformers' attention layers take.

The contract gives every row its own left-padded past and its own encoder length, so the masks
are built here per row (a 4-D additive bias) instead of by transformers' mask helpers, which
derive positions from one shared past length. The past and the cross-attention K/V arrive as
flat tensors; the layers read them from an `EncoderDecoderCache`, so one is filled here with the
cross-attention marked as already computed (the layers then never project encoder states).

The cross-attention weights are read the way transformers' own `output_attentions` reads them:
a forward hook on each layer's cross-attention module takes the softmax weights it returns (eager
attention always computes them), so the layers run unchanged.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, DynamicLayer, EncoderDecoderCache


def split_heads(states: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[B, S, H*Dh] -> [B, H, S, Dh], the layout of every K/V tensor in the contract."""
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


def self_attention_bias(self_attention_mask: torch.Tensor, num_new: int, dtype: torch.dtype):
    """[B, P+T] 0/1 mask over a left-padded past plus the T new tokens -> [B, 1, T, P+T] bias.

    New token t sits at column P+t and sees every unmasked column up to and including its own.
    """
    total = self_attention_mask.shape[1]
    device = self_attention_mask.device
    key_columns = torch.arange(total, device=device)
    query_columns = torch.arange(num_new, device=device) + (total - num_new)
    causal = key_columns[None, :] <= query_columns[:, None]  # [T, P+T]
    allowed = causal[None, :, :] & self_attention_mask[:, None, :].bool()
    return _additive(allowed[:, None, :, :], dtype)


def encoder_attention_bias(encoder_attention_mask: torch.Tensor, dtype: torch.dtype):
    """[B, S] 0/1 mask -> [B, 1, 1, S] bias, broadcast over heads and new tokens."""
    return _additive(encoder_attention_mask[:, None, None, :].bool(), dtype)


def _additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (1.0 - allowed.to(dtype)) * torch.finfo(dtype).min


def filled_cache(
    past: list[tuple[torch.Tensor, torch.Tensor]],
    cross: list[tuple[torch.Tensor, torch.Tensor]],
) -> EncoderDecoderCache:
    """An EncoderDecoderCache holding each layer's past self-attention K/V and its precomputed
    cross-attention K/V (all [B, H, len, Dh]); after the call each self-attention layer holds
    the past with the new tokens appended (read it with `present_key_values`)."""
    cache = EncoderDecoderCache(
        Cache(layers=[_layer_holding(k, v) for k, v in past]),
        Cache(layers=[_layer_holding(k, v) for k, v in cross]),
    )
    for layer_idx in range(len(cross)):
        cache.is_updated[layer_idx] = True
    return cache


def present_key_values(cache: EncoderDecoderCache) -> list[torch.Tensor]:
    """present_key_0, present_value_0, ... in the contract's output order."""
    flat: list[torch.Tensor] = []
    for layer in cache.self_attention_cache.layers:
        flat += [layer.keys, layer.values]
    return flat


def _layer_holding(keys: torch.Tensor, values: torch.Tensor) -> DynamicLayer:
    # Assigned directly rather than through `update`, which concatenates onto a 1-D empty
    # tensor: a rank-mismatched Concat in the exported graph.
    layer = DynamicLayer()
    layer.lazy_initialization(keys, values)
    layer.keys, layer.values = keys, values
    return layer


@dataclass
class DecoderLayerInputs:
    """What every decoder layer of one step reads besides the hidden states."""

    position_ids: torch.Tensor  # [B, T]
    self_attention_mask: torch.Tensor  # [B, P+T] 0/1, left-padded past
    self_bias: torch.Tensor  # [B, 1, T, P+T] additive
    cross_bias: torch.Tensor  # [B, 1, 1, S] additive
    cache: EncoderDecoderCache  # past and cross K/V; the layers append the new self K/V

    def cross_marker(self, layer_idx: int) -> torch.Tensor:
        """Passed as a layer's encoder_hidden_states: it only switches cross-attention on, the
        K/V themselves come from the cache (marked computed)."""
        return self.cache.cross_attention_cache.layers[layer_idx].keys


@contextlib.contextmanager
def recorded_attention(modules: Sequence[torch.nn.Module]) -> Iterator[list[torch.Tensor]]:
    """While open, each call of modules[i] appends its attention weights (the last element of its
    output, [B, H, T, S]) to the yielded list; the hooks are removed on exit."""
    recorded: list[torch.Tensor] = []
    handles = [
        module.register_forward_hook(lambda _module, _args, output: recorded.append(output[-1]))
        for module in modules
    ]
    try:
        yield recorded
    finally:
        for handle in handles:
            handle.remove()


class DecoderStepWrapper(torch.nn.Module, ABC):
    """One decoder step over rows with their own positions, past lengths and encoder lengths:

    forward(input_ids, position_ids, self_attention_mask, encoder_attention_mask,
            past_key_0, past_value_0, ..., cross_key_0, cross_value_0, ...)
        -> (logits, present_key_0, present_value_0, ..., cross_attention)

    cross_attention [B, T, S] is the cross-attention softmax averaged over the heads and over
    `attention_layers` (default: all layers). The flat K/V and the masks are turned into a filled
    cache and 4-D biases here; a family supplies only its embedding step, its layer loop, its head
    and where each layer's cross-attention module lives.
    """

    def __init__(self, attention_layers: Sequence[int] | None = None) -> None:
        super().__init__()
        self.attention_layers = None if attention_layers is None else list(attention_layers)

    @property
    @abstractmethod
    def num_layers(self) -> int: ...

    @abstractmethod
    def cross_attention_modules(self) -> list[torch.nn.Module]:
        """Each layer's cross-attention module, in layer order: one whose output ends with its
        softmax weights [B, H, T, S] (the weights transformers returns as `cross_attentions`)."""

    @abstractmethod
    def embed(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def run_layers(self, hidden: torch.Tensor, step: DecoderLayerInputs) -> torch.Tensor:
        """The hidden states after every decoder layer (and any final norm)."""

    @abstractmethod
    def logits(self, hidden: torch.Tensor) -> torch.Tensor: ...

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        self_attention_mask: torch.Tensor,
        encoder_attention_mask: torch.Tensor,
        *key_values: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        cache = filled_cache(*split_key_values(key_values, self.num_layers))
        hidden = self.embed(input_ids, position_ids)
        step = DecoderLayerInputs(
            position_ids=position_ids,
            self_attention_mask=self_attention_mask,
            self_bias=self_attention_bias(self_attention_mask, input_ids.shape[1], hidden.dtype),
            cross_bias=encoder_attention_bias(encoder_attention_mask, hidden.dtype),
            cache=cache,
        )
        modules = self.cross_attention_modules()
        layers = range(self.num_layers) if self.attention_layers is None else self.attention_layers
        with recorded_attention([modules[layer] for layer in layers]) as weights:
            hidden = self.run_layers(hidden, step)
        if len(weights) != len(layers) or any(w is None for w in weights):
            raise ValueError(
                f"no cross-attention weights from layers {list(layers)}: the wrapper needs the "
                'model loaded with attn_implementation="eager"'
            )
        cross_attention = torch.stack(weights).float().mean(dim=(0, 2))  # over layers and heads
        return (self.logits(hidden).float(), *present_key_values(cache), cross_attention)
