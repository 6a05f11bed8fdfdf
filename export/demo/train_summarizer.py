"""The demo summarizer: a small BART trained on synthetic match reports.

Copying teams, city, day and goals is learned in a few hundred steps. Naming the winner first is
the hard part: the model must tie each goal count to the team two words before it, compare the
two counts, then pick that team. Trained on the full task from the start, the model sat at
chance on the winner for thousands of steps (the tie-up and the comparison are only useful
together), so training follows a short curriculum: first reports without fillers whose score
sentences come in the fixture's order (teach compare-and-pick), then without fillers in any
order, then the spec's reports for the rest, half of them with all three fillers.

That last half is for the misses, and each of its reports holds the kick-off filler ("The game
started at 4 pm."): a model that stopped short of the target named the wrong winner almost only
where that sentence's digit stood among the scores (measured on an AMD EPYC host, seed 0, step
1500, 3,000 spec reports: 6.4% wrong with it, 0.09% without; the other fillers 1.5-2.6% either
way). Trained on spec reports there, that seed's summarizer sat at 98.0-99.4% on its check from
step 1300 to the 4,000-step ceiling and the build failed; with the kick-off filler in the hard
half it passed at step 1200. Training then runs until the held-out check passes (training.py);
the learning rate reaches its floor at step 1600.
"""

from __future__ import annotations

import numpy as np
from tokenizers import Tokenizer
from transformers import BartConfig, BartForConditionalGeneration

from export.demo.tasks import MAX_FILLERS, make_match_report
from export.demo.tokenizers import BOS, EOS, PAD, report_tokenizer, special_id
from export.demo.training import (
    Batch,
    Check,
    TrainResult,
    TrainSettings,
    generated_exact_match,
    pad_right,
    reference_labels,
    set_greedy_generation,
    train_from_seed,
)

MAX_POSITIONS = 64  # a report is at most 40 tokens, its summary 12
MAX_SUMMARY_TOKENS = 16  # generation limit, decoder start included
FIXED_ORDER_UNTIL, NO_FILLERS_UNTIL = 320, 640  # curriculum stages: steps
# of each batch after the curriculum: reports with every filler slot used, the kick-off among them
ALL_FILLERS_SHARE = 0.5
SETTINGS = TrainSettings(max_steps=4000, first_check=700, decay_steps=1600, learning_rate=3e-3)


def build_model(tokenizer: Tokenizer) -> BartForConditionalGeneration:
    """A randomly initialised BART sized for the task (call torch.manual_seed first)."""
    pad, bos, eos = (special_id(tokenizer, t) for t in (PAD, BOS, EOS))
    config = BartConfig(
        vocab_size=tokenizer.get_vocab_size(),
        d_model=96,
        encoder_layers=2,
        decoder_layers=3,  # two cannot learn "who won" (compare, then pick the team) in time
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=192,
        decoder_ffn_dim=192,
        max_position_embeddings=MAX_POSITIONS,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        pad_token_id=pad,
        bos_token_id=bos,
        eos_token_id=eos,
        decoder_start_token_id=bos,
        forced_bos_token_id=None,
        forced_eos_token_id=None,
    )
    model = BartForConditionalGeneration(config)
    generation = model.generation_config
    set_greedy_generation(generation, pad=pad, bos=bos, eos=eos, max_length=MAX_SUMMARY_TOKENS)
    generation.forced_bos_token_id = generation.forced_eos_token_id = None
    generation.no_repeat_ngram_size = 0
    return model


def encode_reports(tokenizer: Tokenizer, reports: list[str]) -> Batch:
    """Reports as right-padded BART inputs with their attention mask."""
    pad = special_id(tokenizer, PAD)
    input_ids = pad_right([e.ids for e in tokenizer.encode_batch(reports)], pad)
    return {"input_ids": input_ids, "attention_mask": (input_ids != pad).long()}


def report_batch(
    tokenizer: Tokenizer, rng: np.random.Generator, size: int, step: int = NO_FILLERS_UNTIL
) -> Batch:
    """`size` fresh reports as BART inputs, summaries as labels (padding ignored by the loss):
    easier reports early in training (`step` < NO_FILLERS_UNTIL), harder ones mixed in later (see
    the module's docstring)."""
    if step < NO_FILLERS_UNTIL:
        shuffled = step >= FIXED_ORDER_UNTIL
        pairs = [make_match_report(rng, max_fillers=0, shuffled=shuffled) for _ in range(size)]
    else:
        all_fillers = round(size * ALL_FILLERS_SHARE)
        pairs = [
            make_match_report(rng, min_fillers=MAX_FILLERS, kick_off=True)
            for _ in range(all_fillers)
        ]
        pairs += [make_match_report(rng) for _ in range(size - all_fillers)]
    return pairs_batch(tokenizer, pairs)


def pairs_batch(tokenizer: Tokenizer, pairs: list[tuple[str, str]]) -> Batch:
    """(report, summary) pairs as BART inputs, summaries as labels (padding ignored by the loss)."""
    labels = reference_labels(tokenizer, [summary for _, summary in pairs])
    return encode_reports(tokenizer, [report for report, _ in pairs]) | {"labels": labels}


def check_batch(tokenizer: Tokenizer, rng: np.random.Generator, cases: int) -> Batch:
    """`cases` fresh reports as the spec draws them, with their summaries: the in-training
    check's fixed cases (training.teacher_forced_exact_match)."""
    return pairs_batch(tokenizer, [make_match_report(rng) for _ in range(cases)])


def train_summarizer(
    seed: int, check: Check, target: float, settings: TrainSettings = SETTINGS
) -> tuple[BartForConditionalGeneration, Tokenizer, TrainResult]:
    """Train from `seed` until `check` reaches `target` (see training.train)."""
    return train_from_seed(
        seed,
        report_tokenizer,
        build_model,
        report_batch,
        settings,
        check,
        target,
        label="summarizer",
    )


def evaluate_summarizer(
    model: BartForConditionalGeneration, tokenizer: Tokenizer, rng: np.random.Generator, cases: int
) -> float:
    """Exact match of greedy `generate()` summaries on `cases` fresh reports."""
    pairs = [make_match_report(rng) for _ in range(cases)]
    return generated_exact_match(
        model, tokenizer, pairs, lambda reports: encode_reports(tokenizer, reports)
    )
