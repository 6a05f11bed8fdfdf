"""Turn the graph contract's flat tensors into what transformers' attention layers take.

The contract gives every row its own left-padded past and its own encoder length, so the masks
are built here per row (a 4-D additive bias) instead of by transformers' mask helpers, which
derive positions from one shared past length. The past and the cross-attention K/V arrive as
flat tensors; the layers read them from an `EncoderDecoderCache`, so one is filled here with the
cross-attention marked as already computed (the layers then never project encoder states).
"""

from __future__ import annotations

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
