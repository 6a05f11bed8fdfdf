"""The running decode batch of one model: its requests in row order, and their rows' tokens,
self/cross K/V and masks.

The batch owns its requests as TGI's Seq2SeqLMBatch does: request i holds the rows after those of
requests 0..i-1 (beam hypotheses are adjacent rows), `filter(leaving)` drops requests and
compacts their rows itself, and `concatenate` joins batches request list and rows alike, so the
runner never computes row indices. See docs/architecture.md for how rows join and leave.

Rows follow docs/graph-contract.md: each row's past is left-padded to the batch's past length P
(zeros in `self_mask` first) and its encoder positions are right-padded to the batch's S. This
is what lets rows of different ages share one decoder call, join with an empty past
(`concatenate`), leave at once (`filter`) and be copied onto each other for beam search
(`reorder`). K/V tensors are handled through `TensorOps`, so the same code keeps them in numpy
on the CPU or as device buffers on a GPU.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.engine.decoding import RowParams
from service.engine.sequence import SequenceGroup
from service.runtime.kv_tensors import Tensor, TensorOps


@dataclass
class DecodeBatch:
    """Rows decoded together; every per-row array is aligned on axis 0."""

    requests: list[SequenceGroup]  # in row order; request i has requests[i].rows rows
    sequences: np.ndarray  # int64 [B, C]: each row's decoder tokens so far, left-aligned
    lengths: np.ndarray  # int64 [B]: tokens in each row (transformers' cur_len)
    new_tokens: int  # T: tokens of each row not yet in its K/V (the next call's input)
    self_mask: np.ndarray  # int64 [B, P]: 1 = real past position
    past: list[Tensor]  # past_key_0, past_value_0, ...: [B, H, P, Dh]
    encoder_mask: np.ndarray  # int64 [B, S]
    cross: list[Tensor]  # cross_key_0, cross_value_0, ...: [B, H, S, Dh]
    params: RowParams
    rngs: np.ndarray  # object [B]: each row's np.random.Generator (sampling rows)
    ops: TensorOps

    @property
    def size(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def past_length(self) -> int:
        return int(self.self_mask.shape[1])

    def kv_bytes(self) -> int:
        return sum(self.ops.nbytes(x) for x in (*self.past, *self.cross))

    def decoder_inputs(self) -> dict[str, Any]:
        """input_ids, position_ids and self_attention_mask of the next decoder call."""
        t = self.new_tokens
        offsets = np.arange(-t, 0)[None, :] + self.lengths[:, None]  # the last T positions
        input_ids = np.take_along_axis(self.sequences, offsets, axis=1)
        mask = np.concatenate([self.self_mask, np.ones((self.size, t), np.int64)], axis=1)
        return {
            "input_ids": input_ids,
            "position_ids": offsets.astype(np.int64),
            "self_attention_mask": mask,
            "encoder_attention_mask": self.encoder_mask,
        }

    def absorb_presents(self, presents: list[Tensor]) -> None:
        """The decoder's present K/V become the past: the T new tokens are now cached."""
        ones = np.ones((self.size, self.new_tokens), np.int64)
        self.self_mask = np.concatenate([self.self_mask, ones], axis=1)
        self.past = presents
        self.new_tokens = 0

    def append_tokens(self, tokens: np.ndarray) -> None:
        """Add one chosen token to every row; it is the next call's input."""
        if int(self.lengths.max()) >= self.sequences.shape[1]:
            grow = np.zeros((self.size, self.sequences.shape[1]), np.int64)
            self.sequences = np.concatenate([self.sequences, grow], axis=1)
        self.sequences[np.arange(self.size), self.lengths] = tokens
        self.lengths = self.lengths + 1
        self.new_tokens = 1

    def filter(self, leaving: Collection[SequenceGroup]) -> DecodeBatch | None:
        """The batch without the `leaving` requests (None if none stays); this batch's tensors
        may be reused. Few rows move: see `compaction_order`."""
        gone = set(leaving)
        flags = [request in gone for request in self.requests]
        if not any(flags):
            return self
        sizes = [request.rows for request in self.requests]
        order = compaction_order(sizes, flags)
        if not order:
            return None
        starts = np.cumsum([0, *sizes])
        keep = np.concatenate([np.arange(starts[i], starts[i] + sizes[i]) for i in order])
        return self.take_rows(keep, [self.requests[i] for i in order])

    def take_rows(self, keep: np.ndarray, requests: list[SequenceGroup]) -> DecodeBatch:
        """The batch of rows `keep` (in that order), which are the rows of `requests`; this
        batch's tensors may be reused.

        Past padding no kept row needs is trimmed (the decoder copies the past every step
        anyway); encoder padding only once it is at least half the width, since trimming copies
        the cross K/V, while attending over padded positions costs little.
        """
        ops = self.ops
        self_mask = self.self_mask[keep]
        encoder_mask = self.encoder_mask[keep]
        used_past = np.flatnonzero(self_mask.any(axis=0))
        start = int(used_past[0]) if used_past.size else self.past_length
        used_encoder = np.flatnonzero(encoder_mask.any(axis=0))
        stop = int(used_encoder[-1]) + 1 if used_encoder.size else 0
        if 2 * stop > encoder_mask.shape[1]:
            stop = encoder_mask.shape[1]

        def rows_of(x: Tensor, lo: int, hi: int) -> Tensor:
            x = ops.compact_rows(x, keep)
            return x if (lo, hi) == (0, ops.length(x)) else ops.slice_length(x, lo, hi)

        return DecodeBatch(
            requests=requests,
            sequences=self.sequences[keep],
            lengths=self.lengths[keep],
            new_tokens=self.new_tokens,
            self_mask=self_mask[:, start:],
            past=[rows_of(x, start, self.past_length) for x in self.past],
            encoder_mask=encoder_mask[:, :stop],
            cross=[rows_of(x, 0, stop) for x in self.cross],
            params=self.params.take(keep),
            rngs=self.rngs[keep],
            ops=ops,
        )

    def reorder(self, dst: np.ndarray, src: np.ndarray) -> None:
        """Beam search: rows `dst` continue the hypotheses of rows `src` (same request)."""
        moved = dst != src
        if not moved.any():
            return
        dst, src = dst[moved], src[moved]
        self.sequences[dst] = self.sequences[src]
        self.past = [self.ops.copy_rows(x, dst, src) for x in self.past]

    def cross_room_for(self, incoming: list[DecodeBatch]) -> list[Tensor] | None:
        """Buffers the cross K/V of this batch and the `incoming` ones can be joined into,
        made now, when joining them would need new ones (a wider input, no spare rows left).
        The encoder's thread calls it beside the steps, which may move this batch's rows
        meanwhile: `concatenate` checks that the room still fits."""
        rows = self.size + sum(b.size for b in incoming)
        length = max(b.encoder_mask.shape[1] for b in [self, *incoming])
        rooms = [self.ops.room_for(x, rows, length) for x in self.cross]
        return None if any(room is None for room in rooms) else rooms

    @classmethod
    def concatenate(
        cls, batches: list[DecodeBatch], cross_room: list[Tensor] | None = None
    ) -> DecodeBatch:
        """Join batches whose rows expect the same number of new tokens; the cross K/V into
        `cross_room` (from `cross_room_for`) when it fits."""
        batches = [b for b in batches if b.size]
        if len(batches) == 1:
            return batches[0]
        if len({b.new_tokens for b in batches}) != 1:
            raise ValueError("rows joining one decoder call must have the same new-token count")
        ops = batches[0].ops
        past_len = max(b.past_length for b in batches)
        enc_len = max(b.encoder_mask.shape[1] for b in batches)
        width = max(b.sequences.shape[1] for b in batches)
        layers = range(len(batches[0].past))
        return cls(
            requests=[request for b in batches for request in b.requests],
            sequences=np.concatenate([_pad(b.sequences, width, left=False) for b in batches]),
            lengths=np.concatenate([b.lengths for b in batches]),
            new_tokens=batches[0].new_tokens,
            self_mask=np.concatenate([_pad(b.self_mask, past_len, left=True) for b in batches]),
            past=[ops.concat_rows([b.past[i] for b in batches], past_len, True) for i in layers],
            encoder_mask=np.concatenate(
                [_pad(b.encoder_mask, enc_len, left=False) for b in batches]
            ),
            cross=[
                ops.concat_rows(
                    [b.cross[i] for b in batches],
                    enc_len,
                    False,
                    None if cross_room is None else cross_room[i],
                )
                for i in range(len(batches[0].cross))
            ],
            params=RowParams.concat([b.params for b in batches]),
            rngs=np.concatenate([b.rngs for b in batches]),
            ops=ops,
        )


def _pad(x: np.ndarray, width: int, left: bool) -> np.ndarray:
    missing = width - x.shape[1]
    if missing == 0:
        return x
    pad = ((0, 0), (missing, 0)) if left else ((0, 0), (0, missing))
    return np.pad(x, pad)


def compaction_order(sizes: list[int], leaving: list[bool]) -> list[int]:
    """The order of the staying groups (indices) after the leaving ones go, chosen so that few
    rows move: groups already inside the smaller batch's rows keep their place, and each hole a
    leaving group leaves is filled by groups from the end whose rows fit it exactly. When they do
    not fit, the staying groups keep their order (every row after the first hole moves).

    Row moves are copies of each row's K/V, which on a CPU cost as much as a decoder step."""
    staying = [i for i, gone in enumerate(leaving) if not gone]
    new_rows = sum(sizes[i] for i in staying)
    starts = np.cumsum([0, *sizes])
    fixed = {int(starts[i]): i for i in staying if starts[i] + sizes[i] <= new_rows}
    movers = [i for i in staying if starts[i] + sizes[i] > new_rows]
    order, position = [], 0
    while position < new_rows:
        if position in fixed:
            group = fixed[position]
        elif movers:
            group = movers.pop()  # from the end: the last rows are the ones that must move
            next_fixed = min((start for start in fixed if start > position), default=new_rows)
            if position + sizes[group] > next_fixed:
                return staying  # does not fit the hole
        else:
            return staying
        order.append(group)
        position += sizes[group]
    return order
