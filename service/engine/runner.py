"""Executes one scheduler step for one model: encode the newcomers, one decoder call, pick tokens.

The runner owns the DecodeBatch and the running requests in row order (request i holds the
rows after those of requests 0..i-1; beam hypotheses are adjacent rows). Token choice is
vectorised over the batch: one processing pass, one argmax, one sampling pass; only the
beam bookkeeping runs per request (numpy over its num_beams rows).
"""

from __future__ import annotations

import time

import numpy as np

from service.engine.batch import DecodeBatch
from service.engine.beam_search import BeamSearchGroup
from service.engine.decoding import RowParams, process_logits, sample_tokens
from service.engine.scheduler import SequenceGroup, StepEvent, StepPlan
from service.runtime.model import LoadedModel


class ModelRunner:
    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        tokens = model.manifest.special_tokens
        self.eos_ids = np.asarray(tokens.eos, dtype=np.int64)
        self.prompt = np.asarray(
            [tokens.decoder_start, *model.manifest.decoder_prompt], dtype=np.int64
        )
        self.pad_id = tokens.pad
        self.batch: DecodeBatch | None = None
        self.groups: list[SequenceGroup] = []
        self.encoder_seconds: float | None = None  # the last step's encoder run, if it had one

    @property
    def rows(self) -> int:
        return 0 if self.batch is None else self.batch.size

    def kv_bytes(self) -> int:
        return 0 if self.batch is None else self.batch.kv_bytes()

    def execute(self, plan: StepPlan) -> list[tuple[SequenceGroup, StepEvent]]:
        """Apply the plan, run one decoder step, and return each request's new tokens."""
        events = [(group, StepEvent(tokens=[], error=error)) for group, error in plan.drop]
        self._remove({id(group) for group, _ in plan.drop})
        self.encoder_seconds = None
        incoming = self._encode(plan.admit) if plan.admit else None
        if incoming is not None:
            self.groups.extend(plan.admit)
        decoded = self._decode(incoming)
        if decoded is None:
            return events
        events.extend(self._choose_tokens(*decoded))
        finished = {id(group) for group, event in events if event.finish_reason}
        self._remove(finished)
        return events

    def _remove(self, leaving: set[int]) -> None:
        if not leaving or self.batch is None:
            return
        sizes = [group.rows for group in self.groups]
        order = compaction_order(sizes, [id(group) in leaving for group in self.groups])
        starts = np.cumsum([0, *sizes])
        kept = [self.groups[i] for i in order]
        self.groups = kept
        if kept:
            keep = np.concatenate([np.arange(starts[i], starts[i] + sizes[i]) for i in order])
            self.batch = self.batch.filter(keep)
        else:
            self.batch = None

    def _encode(self, groups: list[SequenceGroup]) -> DecodeBatch:
        """Run the newcomers' encoders as one batch and lay out their decoder rows."""
        model = self.model
        feeds = _stack_encoder_feeds([g.encoder_feeds for g in groups], self.pad_id)
        started = time.perf_counter()
        encoded = model.run_encoder(feeds)
        self.encoder_seconds = time.perf_counter() - started
        rows_per_group = np.array([g.rows for g in groups])
        row_owner = np.repeat(np.arange(len(groups)), rows_per_group)
        cross = encoded.cross
        if rows_per_group.max() > 1:  # beam hypotheses each get a copy of their request's K/V
            cross = [model.ops.take_rows(x, row_owner) for x in cross]
        capacity = max(g.params.max_length for g in groups)
        sequences = np.zeros((row_owner.size, capacity), np.int64)
        sequences[:, : self.prompt.size] = self.prompt
        for group in groups:
            self._start_decoding(group)
        return DecodeBatch(
            sequences=sequences,
            lengths=np.full(row_owner.size, self.prompt.size, np.int64),
            new_tokens=self.prompt.size,
            self_mask=np.zeros((row_owner.size, 0), np.int64),
            past=model.empty_past(row_owner.size),
            encoder_mask=encoded.encoder_mask[row_owner],
            cross=cross,
            params=RowParams.concat([RowParams.for_request(g.params, g.rows) for g in groups]),
            rngs=np.array([g.rng for g in groups for _ in range(g.rows)], dtype=object),
            ops=model.ops,
        )

    def _start_decoding(self, group: SequenceGroup) -> None:
        params = group.params
        if params.num_beams > 1:
            group.beam = BeamSearchGroup(
                params.num_beams,
                params.prompt_len,
                params.max_length,
                params.length_penalty,
                params.early_stopping,
                self.eos_ids,
            )
        elif params.do_sample:
            group.rng = np.random.default_rng(params.seed)

    def _decode(self, incoming: DecodeBatch | None) -> tuple[np.ndarray, np.ndarray | None] | None:
        """One decoder call over every row (two when newcomers bring a multi-token prompt).

        Returns the logits of every row and, when a row asked for explain, every row's
        cross-attention [B, S] (zeros for rows of a call where nobody asked)."""
        calls = [b for b in (self.batch, incoming) if b is not None]
        if not calls:
            return None
        if len(calls) == 2 and calls[0].new_tokens == calls[1].new_tokens:
            calls = [DecodeBatch.concatenate(calls)]
        outputs = []
        for batch in calls:
            wants_attention = bool(batch.params.explain.any())
            output = self.model.run_decoder(
                batch.decoder_inputs(), batch.past, batch.cross, wants_attention
            )
            batch.absorb_presents(output.presents)
            outputs.append(output)
        self.batch = DecodeBatch.concatenate(calls)
        if len(outputs) == 1:  # the usual step: no copy of the [B, V] logits
            return outputs[0].logits, outputs[0].attention
        logits = np.concatenate([output.logits for output in outputs])
        if all(output.attention is None for output in outputs):
            return logits, None
        attention = np.zeros((self.batch.size, self.batch.encoder_mask.shape[1]), np.float32)
        row = 0
        for batch, output in zip(calls, outputs, strict=True):
            if output.attention is not None:
                attention[row : row + batch.size, : output.attention.shape[1]] = output.attention
            row += batch.size
        return logits, attention

    def _choose_tokens(
        self, logits: np.ndarray, attention: np.ndarray | None
    ) -> list[tuple[SequenceGroup, StepEvent]]:
        batch = self.batch
        assert batch is not None
        params = batch.params
        scores = process_logits(logits, batch.sequences, batch.lengths, params, self.eos_ids)
        tokens = np.argmax(scores, axis=1)
        sampled = np.flatnonzero(params.do_sample)
        if sampled.size:
            tokens[sampled] = sample_tokens(scores[sampled], list(batch.rngs[sampled]))

        events: list[tuple[SequenceGroup, StepEvent]] = []
        moves_dst, moves_src = [], []
        row = 0
        for group in self.groups:
            if group.beam is not None:
                rows = slice(row, row + group.rows)
                step = group.beam.step(
                    scores[rows],
                    batch.sequences[rows],
                    int(batch.lengths[row]),
                    _attention_of(group, attention, rows),
                )
                tokens[rows] = step.next_tokens
                moves_dst.append(np.arange(row, row + group.rows))
                moves_src.append(row + step.source_beams)
                if step.done:
                    events.append((group, self._beam_answer(group)))
            row += group.rows
        if moves_dst:
            batch.reorder(np.concatenate(moves_dst), np.concatenate(moves_src))
        batch.append_tokens(tokens)

        ended = np.isin(tokens, self.eos_ids)
        stopped = ended | (batch.lengths >= params.max_length)
        row = 0
        for group in self.groups:
            if group.beam is None:
                token = int(tokens[row])
                group.generated.append(token)
                reason = None
                if stopped[row]:
                    reason = "eos" if ended[row] else "length"
                event = StepEvent(
                    tokens=[token],
                    finish_reason=reason,
                    attention=_attention_of(group, attention, slice(row, row + 1)),
                )
                events.append((group, event))
            row += group.rows
        return events

    def _beam_answer(self, group: SequenceGroup) -> StepEvent:
        assert group.beam is not None
        hypothesis = group.beam.best()[group.params.prompt_len :].tolist()
        group.generated = hypothesis
        ended = bool(hypothesis) and hypothesis[-1] in self.eos_ids
        return StepEvent(
            tokens=hypothesis,
            finish_reason="eos" if ended else "length",
            attention=group.beam.best_attention(),
        )


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


def _attention_of(
    group: SequenceGroup, attention: np.ndarray | None, rows: slice
) -> np.ndarray | None:
    """The group's rows of this step's cross-attention, cut to its own source length (the
    batch's encoder width changes as rows come and go), if the group asked for it."""
    if attention is None or not group.params.explain:
        return None
    return attention[rows, : group.input_tokens].copy()


def _stack_encoder_feeds(feeds: list[dict[str, np.ndarray]], pad_id: int) -> dict[str, np.ndarray]:
    """Batch the requests' encoder inputs: token ids right-padded with the pad id."""
    if "input_ids" not in feeds[0]:
        return {name: np.concatenate([f[name] for f in feeds]) for name in feeds[0]}
    length = max(f["input_ids"].shape[1] for f in feeds)
    input_ids = np.full((len(feeds), length), pad_id, np.int64)
    attention_mask = np.zeros((len(feeds), length), np.int64)
    for row, f in enumerate(feeds):
        width = f["input_ids"].shape[1]
        input_ids[row, :width] = f["input_ids"][0]
        attention_mask[row, :width] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}
