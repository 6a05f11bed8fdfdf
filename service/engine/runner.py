"""The execute stage of a step: encode the newcomers, one decoder call, choose tokens.

The runner holds the model's DecodeBatch between steps (the batch knows its requests and rows)
and returns raw token choices: it decides nothing about stopping, which is the update stage's
job (service.engine.update). A request's prompt (captioning) is fed one forced token per step
after the decoder start: such a row's "choice" is its next prompt token, so it shares decoder
calls with every other row and its logits are those of the row alone. Token choice is
vectorised over the batch: one processing pass, one argmax, one sampling pass; only the beam
bookkeeping runs per request (numpy over its num_beams rows). With `device_argmax`, rows that
only need an argmax (greedy, no active logits processor but a minimum length) get it where the
logits are (service.runtime.token_choice) and only the other rows' logits come to the host.
See docs/architecture.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from service.engine.batch import DecodeBatch
from service.engine.beam_search import BeamSearchGroup
from service.engine.decoding import (
    NO_TOKEN,
    RowParams,
    every_row_bans,
    process_logits,
    sample_tokens,
)
from service.engine.encoding import BackgroundEncoder, EncoderRun, Failure
from service.engine.scheduler import StepPlan, encoder_tokens
from service.engine.sequence import SequenceGroup
from service.errors import InvalidArgument
from service.runtime.cores import CpuGroups
from service.runtime.kv_tensors import Tensor
from service.runtime.model import LoadedModel


@dataclass
class RunnerOutput:
    """What one decoder step chose, row by row, for the update stage to act on."""

    requests: list[SequenceGroup]  # the batch's requests in row order
    tokens: np.ndarray  # int64 [rows]: the token each row chose (beams: after reordering)
    forced: np.ndarray  # bool [rows]: the row's token was a prompt token, not a choice
    lengths: np.ndarray  # int64 [rows]: each row's tokens, the chosen one included
    attention: np.ndarray | None  # float32 [rows, S]: when some row asked for explain
    beams_done: set[SequenceGroup]  # beam requests whose search ended at this step
    # newcomers whose input the model failed on, and sampled requests left without any token
    failed: list[Failure]


class _Decoded(NamedTuple):
    """One step's decoder results over the whole batch."""

    logits: np.ndarray  # float32 [R, V]: rows `logit_rows` only
    logit_rows: np.ndarray  # int64 [R], ascending: rows whose token is chosen on the host
    tokens: np.ndarray | None  # int64 [B]: every row's argmax, when chosen on the device
    attention: np.ndarray | None  # float32 [B, S]: when some row asked for explain


class ModelRunner:
    def __init__(
        self,
        model: LoadedModel,
        device_argmax: bool = False,
        encode_beside: bool = False,
        encoder_nice: int = 0,
        encoder_cpus: CpuGroups = (),
    ) -> None:
        """`device_argmax`: plain greedy rows' tokens are chosen where the logits are, so
        only the other rows' logits cross to the host (EngineConfig.device_argmax).
        `encode_beside`: newcomers' encoders run on a thread beside the steps, `encoder_nice`
        lower in priority, on `encoder_cpus` only if given (EngineConfig.encoder_beside_decode,
        encoder_nice, pin_cores)."""
        self.model = model
        self.device_argmax = device_argmax
        tokens = model.manifest.special_tokens
        self.eos_ids = np.asarray(tokens.eos, dtype=np.int64)
        self.banned_ids = np.asarray(model.manifest.generation.banned_tokens(), dtype=np.int64)
        self.prompt = np.asarray(
            [tokens.decoder_start, *model.manifest.decoder_prompt], dtype=np.int64
        )
        self.pad_id = tokens.pad
        self.batch: DecodeBatch | None = None
        self.encoder_runs: list[EncoderRun] = []  # the runs whose rows joined at the last step
        # newcomers' encoders on their own thread, beside the steps (None: inside the step)
        self.background = (
            BackgroundEncoder(self._encode, self._join_room, encoder_nice, encoder_cpus)
            if encode_beside
            else None
        )

    @property
    def rows(self) -> int:
        return 0 if self.batch is None else self.batch.size

    def kv_bytes(self) -> int:
        return 0 if self.batch is None else self.batch.kv_bytes()

    def execute(self, plan: StepPlan) -> RunnerOutput | None:
        """Drop the plan's dropped requests, encode its newcomers (or hand them to the
        background encoder and take in those it finished), run one decoder step and choose
        every row's token; None when no row is left to decode."""
        self.release([group for group, _ in plan.drop])
        self.encoder_runs, failed = self._encoded(plan.admit)
        incoming = [run.batch for run in self.encoder_runs]
        room = next((r.cross_room for r in reversed(self.encoder_runs) if r.cross_room), None)
        decoded = self._decode(DecodeBatch.concatenate(incoming) if incoming else None, room)
        if decoded is None:
            if not failed:
                return None
            nothing = np.zeros(0, np.int64)
            return RunnerOutput([], nothing, nothing.astype(bool), nothing, None, set(), failed)
        assert self.batch is not None
        forced = self.batch.lengths < self.batch.params.prompt_len
        tokens, beams_done, stuck = self._choose_tokens(decoded, forced)
        batch = self.batch
        return RunnerOutput(
            list(batch.requests),
            tokens,
            forced,
            batch.lengths,
            decoded.attention,
            beams_done,
            failed + stuck,
        )

    def release(self, leaving: list[SequenceGroup]) -> None:
        """The requests leave the batch; their rows and K/V are free at once."""
        if leaving and self.batch is not None:
            self.batch = self.batch.filter(leaving)
        if leaving and self.background is not None:
            self.background.leave(leaving)

    def reset(self) -> None:
        """Forget every row (after a runtime failure)."""
        self.batch = None
        if self.background is not None:
            self.background.clear()

    def _encoded(self, admit: list[SequenceGroup]) -> tuple[list[EncoderRun], list[Failure]]:
        """The encoder runs whose rows join this step: the newcomers' own, or, beside the
        steps, those the background encoder finished (waited for when no row is decoding);
        and the newcomers the model failed on."""
        if self.background is None:
            return self._encode(admit) if admit else ([], [])
        if admit:
            self.background.submit(admit)
        return self.background.finished(wait=self.batch is None)

    def _join_room(self, incoming: DecodeBatch, waiting: list[DecodeBatch]) -> list[Tensor] | None:
        """On the encoder's thread: the buffers the running batch, the runs `waiting` to join
        before it and `incoming` will be joined into, when that join needs new ones, so the
        step that joins them only copies (DecodeBatch.cross_room_for)."""
        running = self.batch  # the step thread's, read as a hint: the join checks the room
        return None if running is None else running.cross_room_for([*waiting, incoming])

    def _encode(self, groups: list[SequenceGroup]) -> tuple[list[EncoderRun], list[Failure]]:
        """The newcomers encoded together; if the model fails on that batch, each is encoded
        alone, so that a request whose input the model cannot run (e.g. a token id its
        embedding lacks) fails alone and the others join."""
        try:
            return [self._encode_together(groups)], []
        except Exception as error:
            if len(groups) == 1:
                return [], [(groups[0], error)]
        runs, failed = [], []
        for group in groups:
            try:
                runs.append(self._encode_together([group]))
            except Exception as error:
                failed.append((group, error))
        return runs, failed

    def _encode_together(self, groups: list[SequenceGroup]) -> EncoderRun:
        """Run the newcomers' encoders as one batch and lay out their decoder rows."""
        model = self.model
        feeds = _stack_encoder_feeds([g.encoder_feeds for g in groups], self.pad_id)
        started = time.perf_counter()
        encoded = model.run_encoder(feeds)
        seconds = time.perf_counter() - started
        rows_per_group = np.array([g.rows for g in groups])
        row_owner = np.repeat(np.arange(len(groups)), rows_per_group)
        cross = encoded.cross
        if rows_per_group.max() > 1:  # beam hypotheses each get a copy of their request's K/V
            cross = [model.ops.take_rows(x, row_owner) for x in cross]
        capacity = max(g.params.max_length for g in groups)
        sequences = np.zeros((row_owner.size, capacity), np.int64)
        sequences[:, : self.prompt.size] = self.prompt
        for group, rows in zip(
            groups, np.split(sequences, np.cumsum(rows_per_group)[:-1]), strict=True
        ):
            rows[:, self.prompt.size : group.params.prompt_len] = group.prompt_ids  # forced later
            self._start_decoding(group)
        batch = DecodeBatch(
            requests=list(groups),
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
        return EncoderRun(batch, seconds, encoder_tokens(groups))

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

    def _decode(
        self, incoming: DecodeBatch | None, cross_room: list[Tensor] | None = None
    ) -> _Decoded | None:
        """One decoder call over every row (two when newcomers bring a multi-token prompt);
        the newcomers' rows join into `cross_room` when it fits.

        Returns the host rows' logits (every row's without `device_argmax`), the device's
        argmax tokens (with it) and, when a row asked for explain, every row's cross-attention
        [B, S] (zeros for rows of a call where nobody asked)."""
        calls = [b for b in (self.batch, incoming) if b is not None]
        if not calls:
            return None
        if len(calls) == 2 and calls[0].new_tokens == calls[1].new_tokens:
            calls = [DecodeBatch.concatenate(calls, cross_room)]
        outputs, logit_rows, row = [], [], 0
        for batch in calls:
            wants_attention = bool(batch.params.explain.any())
            host_rows, banned = None, None
            if self.device_argmax:
                host_rows = np.flatnonzero(batch.params.needs_host_logits(batch.lengths))
                banned = np.concatenate(
                    [
                        batch.params.min_length_bans(batch.lengths, self.eos_ids),
                        every_row_bans(batch.size, self.banned_ids),
                    ]
                )
            output = self.model.run_decoder(
                batch.decoder_inputs(), batch.past, batch.cross, wants_attention, host_rows, banned
            )
            batch.absorb_presents(output.presents)
            outputs.append(output)
            logit_rows.append(row + (np.arange(batch.size) if host_rows is None else host_rows))
            row += batch.size
        self.batch = DecodeBatch.concatenate(calls, cross_room)
        rows = np.concatenate(logit_rows)
        device_tokens = [output.tokens for output in outputs]
        tokens = None if device_tokens[0] is None else np.concatenate(device_tokens)
        if len(outputs) == 1:  # the usual step: no copy of the [B, V] logits
            return _Decoded(outputs[0].logits, rows, tokens, outputs[0].attention)
        logits = np.concatenate([output.logits for output in outputs])
        if all(output.attention is None for output in outputs):
            return _Decoded(logits, rows, tokens, None)
        attention = np.zeros((self.batch.size, self.batch.encoder_mask.shape[1]), np.float32)
        row = 0
        for batch, output in zip(calls, outputs, strict=True):
            if output.attention is not None:
                attention[row : row + batch.size, : output.attention.shape[1]] = output.attention
            row += batch.size
        return _Decoded(logits, rows, tokens, attention)

    def _choose_tokens(
        self, decoded: _Decoded, forced: np.ndarray
    ) -> tuple[np.ndarray, set[SequenceGroup], list[Failure]]:
        """Every row's next token, appended to its sequence; beam requests pick theirs among
        their hypotheses (rows continue the hypothesis they were reordered onto). Rows without
        logits on the host keep the device's argmax. `forced` rows take their next prompt token
        (already in their sequence): no sampling draw, no beam step, so their search starts
        after the prompt as generate()'s does. Also the sampled and beam requests whose own
        settings banned every token: they fail alone (generate() raises for sampling, returns
        arbitrary tokens for beams), the batch goes on; greedy rows take the first token, as
        generate() does."""
        batch = self.batch
        assert batch is not None
        rows, attention = decoded.logit_rows, decoded.attention
        every_row = rows.size == batch.size  # then rows == arange(B): no subset copies
        params = batch.params if every_row else batch.params.take(rows)
        sequences = batch.sequences if every_row else batch.sequences[rows]
        lengths = batch.lengths if every_row else batch.lengths[rows]
        scores = process_logits(
            decoded.logits, sequences, lengths, params, self.eos_ids, self.banned_ids
        )
        tokens = np.empty(batch.size, np.int64) if decoded.tokens is None else decoded.tokens
        tokens[rows] = np.argmax(scores, axis=1)
        sampled = np.flatnonzero(params.do_sample & ~forced[rows])
        stuck: list[Failure] = []
        if sampled.size:
            sampled_rows = list(batch.rngs[rows[sampled]])
            drawn = sample_tokens(scores[sampled], sampled_rows)
            tokens[rows[sampled]] = drawn
            stuck = self._without_tokens(rows[sampled[drawn == NO_TOKEN]])
        rows_forced = np.flatnonzero(forced)
        if rows_forced.size:
            tokens[rows_forced] = batch.sequences[rows_forced, batch.lengths[rows_forced]]

        beams_done: set[SequenceGroup] = set()
        moves_dst, moves_src = [], []
        row = 0
        for group in batch.requests:
            # its rows are host rows (beams need their logits); none while in its prompt
            if group.beam is not None and not forced[row]:
                own = slice(row, row + group.rows)
                at = int(np.searchsorted(rows, row))
                step = group.beam.step(
                    scores[at : at + group.rows],
                    batch.sequences[own],
                    int(batch.lengths[row]),
                    group.own_attention(attention, own),
                )
                if step.no_token:  # generate() returns arbitrary tokens here
                    stuck.append((group, _no_token_left(group, int(batch.lengths[row]))))
                    row += group.rows
                    continue
                tokens[own] = step.next_tokens
                moves_dst.append(np.arange(row, row + group.rows))
                moves_src.append(row + step.source_beams)
                if step.done:
                    beams_done.add(group)
            row += group.rows
        if moves_dst:
            batch.reorder(np.concatenate(moves_dst), np.concatenate(moves_src))
        batch.append_tokens(tokens)
        return tokens, beams_done, stuck

    def _without_tokens(self, rows: np.ndarray) -> list[Failure]:
        """The requests of sampled `rows` that have no token left to draw, each with its error."""
        if rows.size == 0:
            return []
        assert self.batch is not None
        requests, lengths = self.batch.requests, self.batch.lengths
        starts = np.cumsum([0, *(group.rows for group in requests)])
        owners = np.searchsorted(starts, rows, side="right") - 1
        failures = {requests[i]: int(lengths[row]) for i, row in zip(owners, rows, strict=True)}
        return [(group, _no_token_left(group, length)) for group, length in failures.items()]


def _no_token_left(group: SequenceGroup, length: int) -> InvalidArgument:
    """The error of a request whose settings ban every token when its sequence is `length`
    tokens long (decoder start and prompt included)."""
    position = length - group.params.prompt_len + 1
    return InvalidArgument(
        f"no token is left to choose at generated token {position}: "
        "no_repeat_ngram_size and min_new_tokens (with the model's banned tokens) ban every "
        "token of its vocabulary there"
    )


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
