"""What both demo models share: greedy generation defaults, the training loop (fresh synthetic
batches, AdamW with warmup then linear decay to a floor, a held-out check every block of steps,
progress lines) and the exact-match measure.

Training runs until the model answers a fixed set of held-out cases well enough, not for a fixed
number of steps: float results differ across CPUs and thread counts, so the same steps give
different weights on different machines, and a model that was right on one machine missed "who
won" on another. A step count still ends each block, so a seed gives the same weights and the
same stopping step on one machine; a ceiling turns a model that never gets there into a loud
failure. A fresh batch every step means the model never sees the same case twice and cannot
overfit.

The check has two fixed sets. The small one is scored at every check; the first check where it
happens to cross the target is the luckiest of many noisy draws, so a model stopped there
scored 1.2-2% lower on other cases (99.0% on the small set, 97.0-97.8% on 500-2,000 others). A
larger set, scored only when the small one comes near the target, decides: training stops when
it reaches the target.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import GenerationConfig, PreTrainedModel

from export.errors import ExportError

Batch = dict[str, torch.Tensor]
Model = TypeVar("Model", bound=PreTrainedModel)
Source = TypeVar("Source")
# A fixed held-out set's score: (model, tokenizer) -> exact match per measure.
Score = Callable[[Any, Tokenizer], dict[str, float]]

# A build's random cases come from np.random.default_rng([seed, stream]): training, the in-training
# check's two sets and the build's held-out measure draw from different streams of the same seed,
# so they never share a case.
TRAIN_STREAM, HELD_OUT_STREAM, CHECK_STREAM, CONFIRM_STREAM = 0, 1, 2, 3
EVALUATION_CHUNK = 100  # cases per generate() call when measuring: bounds memory


@dataclass(frozen=True)
class TrainSettings:
    max_steps: int  # the ceiling: still short of the target here, training fails
    first_check: int = 200  # the first held-out check (none while a curriculum runs)
    check_every: int = 100  # steps between held-out checks after the first (one forward pass each)
    decay_steps: int = 1600  # the learning rate decays linearly to its floor by this step
    batch_size: int = 64
    learning_rate: float = 3e-3
    final_lr_share: float = 0.05  # the floor, as a share of learning_rate
    warmup_steps: int = 100
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    log_every: int = 100  # steps between progress lines


@dataclass(frozen=True)
class Check:
    """The in-training held-out check: `screen` at every check step, `confirm` (more cases) only
    when every screened figure reached the target less `screen_slack`; training stops when the
    confirmation reaches the target."""

    screen: Score
    confirm: Score
    screen_slack: float = 0.0


@dataclass
class TrainResult:
    """What training did: recorded in the build report."""

    steps: int = 0
    # {"step", "exact_match"} each, and "confirmed_exact_match" where the screen passed
    checks: list[dict[str, Any]] = field(default_factory=list)
    final_loss: float = float("nan")
    train_seconds: float = 0.0
    check_seconds: float = 0.0

    def report(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "checks": self.checks,
            "final_loss": round(self.final_loss, 5),
            "train_seconds": round(self.train_seconds, 1),
            "check_seconds": round(self.check_seconds, 1),
        }


def set_greedy_generation(
    generation: GenerationConfig, *, pad: int, bos: int, eos: int, max_length: int
) -> None:
    """Greedy decoding that starts with bos and stops at eos or `max_length` tokens: saved
    with the checkpoint, so it becomes the served model's default."""
    generation.decoder_start_token_id, generation.eos_token_id = bos, eos
    generation.pad_token_id, generation.bos_token_id = pad, bos
    generation.num_beams, generation.do_sample = 1, False
    generation.max_length, generation.min_length = max_length, 0


def learning_rate_factor(settings: TrainSettings) -> Callable[[int], float]:
    """Linear warmup, linear decay to `final_lr_share` at `decay_steps`, then that floor: the
    schedule does not depend on when training stops."""

    def factor(step: int) -> float:
        if step < settings.warmup_steps:
            return (step + 1) / settings.warmup_steps
        decayed = (step - settings.warmup_steps) / max(
            settings.decay_steps - settings.warmup_steps, 1
        )
        return max(1.0 - decayed * (1.0 - settings.final_lr_share), settings.final_lr_share)

    return factor


def _is_check_step(step: int, settings: TrainSettings) -> bool:
    """At `first_check`, every `check_every` steps after it, and at the ceiling."""
    since_first = step - settings.first_check
    return step == settings.max_steps or (
        since_first >= 0 and since_first % settings.check_every == 0
    )


def train(
    model: torch.nn.Module,
    next_batch: Callable[[np.random.Generator, int, int], Batch],
    rng: np.random.Generator,
    settings: TrainSettings,
    check: Check,
    target: float,
    label: str,
    tokenizer: Tokenizer,
) -> TrainResult:
    """Train `model` in place on batches from `next_batch(rng, batch_size, step)` (a dict of model
    keyword arguments including `labels`; `step` counts from 0, for curricula) until every figure
    of `check` reaches `target` (the screen within its slack, then the confirmation). Raises
    ExportError with the figures if the step ceiling comes first."""
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate_factor(settings))
    result = TrainResult()
    start = time.perf_counter()
    recent_losses: list[float] = []
    reached = False
    for step in range(1, settings.max_steps + 1):
        model.train()
        loss = model(**next_batch(rng, settings.batch_size, step - 1)).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
        optimizer.step()
        schedule.step()
        recent_losses.append(loss.item())
        result.steps = step
        if step % settings.log_every == 0 or step == settings.max_steps:
            result.final_loss = sum(recent_losses) / len(recent_losses)
            recent_losses.clear()
            elapsed = time.perf_counter() - start - result.check_seconds
            print(f"[{label}] step {step} loss {result.final_loss:.4f} {elapsed:.0f}s", flush=True)
        if _is_check_step(step, settings):
            reached = _checked(model, tokenizer, check, target, result, label)
            if reached:
                break
    model.eval()
    result.train_seconds = time.perf_counter() - start - result.check_seconds
    if not reached:
        raise ExportError(
            f"{label}: held-out exact match still below {target:.0%} after the ceiling of "
            f"{settings.max_steps} steps; checks: {_describe_checks(result.checks)}"
        )
    return result


def _checked(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    check: Check,
    target: float,
    result: TrainResult,
    label: str,
) -> bool:
    """Run the held-out check (the confirmation too when the screen passes) and record it;
    whether every figure of both reached `target`."""
    start = time.perf_counter()
    model.eval()
    figures = check.screen(model, tokenizer)
    record: dict[str, Any] = {"step": result.steps, "exact_match": figures}
    result.checks.append(record)
    message = f"[{label}] step {result.steps} held-out check {_describe(figures)}"
    reached = _all_reach(figures, target - check.screen_slack)
    if reached:
        record["confirmed_exact_match"] = confirmed = check.confirm(model, tokenizer)
        message += f"; confirmation {_describe(confirmed)}"
        reached = _all_reach(confirmed, target)
    result.check_seconds += time.perf_counter() - start
    print(message, flush=True)
    return reached


def _all_reach(figures: dict[str, float], target: float) -> bool:
    return all(value >= target for value in figures.values())


def _describe(figures: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.1%}" for name, value in figures.items())


def _describe_checks(checks: list[dict[str, Any]]) -> str:
    return "; ".join(_describe_check(check) for check in checks)


def _describe_check(check: dict[str, Any]) -> str:
    described = f"step {check['step']}: {_describe(check['exact_match'])}"
    if "confirmed_exact_match" in check:
        described += f" (confirmation {_describe(check['confirmed_exact_match'])})"
    return described


def train_from_seed(
    seed: int,
    make_tokenizer: Callable[[], Tokenizer],
    build_model: Callable[[Tokenizer], Model],
    next_batch: Callable[[Tokenizer, np.random.Generator, int, int], Batch],
    settings: TrainSettings,
    check: Check,
    target: float,
    label: str,
) -> tuple[Model, Tokenizer, TrainResult]:
    """Seed torch (the initial weights), build the tokenizer and the model, then `train` on
    `next_batch(tokenizer, rng, batch_size, step)` batches from the seed's training stream until
    `check` reaches `target`."""
    torch.manual_seed(seed)
    tokenizer = make_tokenizer()
    model = build_model(tokenizer)
    rng = np.random.default_rng([seed, TRAIN_STREAM])
    result = train(
        model,
        partial(next_batch, tokenizer),
        rng,
        settings,
        check,
        target,
        label,
        tokenizer,
    )
    return model, tokenizer, result


@torch.no_grad()
def generated_exact_match(
    model: PreTrainedModel,
    tokenizer: Tokenizer,
    cases: Sequence[tuple[Source, str]],
    model_inputs: Callable[[list[Source]], Batch],
) -> float:
    """Exact match of greedy `generate()` outputs on (source, reference) `cases`; a chunk of
    sources becomes `generate()` keyword arguments through `model_inputs`."""
    predictions: list[str] = []
    for start in range(0, len(cases), EVALUATION_CHUNK):
        sources = [source for source, _ in cases[start : start + EVALUATION_CHUNK]]
        output = model.generate(**model_inputs(sources))
        predictions += tokenizer.decode_batch(output.tolist(), skip_special_tokens=True)
    return exact_match(predictions, [reference for _, reference in cases])


@torch.no_grad()
def teacher_forced_exact_match(model: PreTrainedModel, batch: Batch) -> float:
    """What greedy `generate()` would score on `batch` (model inputs with `labels`, the references
    ending in eos, padding -100), from one forward pass instead of a decoding loop: greedy
    decoding reproduces a reference exactly when, at every position, the reference token is the
    argmax given the reference prefix, eos included (the demo models use no logits processor).
    The in-training check runs this every block of steps, so it must cost little."""
    labels = batch["labels"]
    hits = (model(**batch).logits.argmax(dim=-1) == labels) | (labels == -100)
    return hits.all(dim=1).float().mean().item()


def exact_match(predictions: list[str], references: list[str]) -> float:
    """The fraction of predictions equal to their reference, character for character."""
    hits = sum(p == r for p, r in zip(predictions, references, strict=True))
    return hits / len(references)


def reference_labels(tokenizer: Tokenizer, references: list[str]) -> torch.Tensor:
    """References as training labels: their token ids (eos included), padding -100 (ignored by
    the loss and by teacher_forced_exact_match)."""
    return pad_right([e.ids for e in tokenizer.encode_batch(references)], -100)


def pad_right(sequences: list[list[int]], pad: int) -> torch.Tensor:
    """Stack token lists into a [B, longest] int64 tensor, right-padded with `pad`."""
    longest = max(len(s) for s in sequences)
    return torch.tensor([s + [pad] * (longest - len(s)) for s in sequences], dtype=torch.long)
