"""What both demo models share: greedy generation defaults, the training loop (fixed steps,
fresh synthetic batches, AdamW with warmup then linear decay, progress lines) and the held-out
exact-match measure.

Training is by steps, never by time, so that a seed gives the same weights on any machine; a
fresh batch every step means the model never sees the same case twice and cannot overfit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import GenerationConfig, PreTrainedModel

Batch = dict[str, torch.Tensor]
Model = TypeVar("Model", bound=PreTrainedModel)
Source = TypeVar("Source")

# A build's random cases come from np.random.default_rng([seed, stream]): training and the
# held-out check draw from different streams of the same seed, so they never share a case.
TRAIN_STREAM, HELD_OUT_STREAM = 0, 1
EVALUATION_CHUNK = 100  # cases per generate() call when measuring: bounds memory


@dataclass(frozen=True)
class TrainSettings:
    steps: int
    batch_size: int = 64
    learning_rate: float = 3e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    log_every: int = 100  # steps between progress lines


def set_greedy_generation(
    generation: GenerationConfig, *, pad: int, bos: int, eos: int, max_length: int
) -> None:
    """Greedy decoding that starts with bos and stops at eos or `max_length` tokens: saved
    with the checkpoint, so it becomes the served model's default."""
    generation.decoder_start_token_id, generation.eos_token_id = bos, eos
    generation.pad_token_id, generation.bos_token_id = pad, bos
    generation.num_beams, generation.do_sample = 1, False
    generation.max_length, generation.min_length = max_length, 0


def _warmup_then_linear_decay(settings: TrainSettings) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < settings.warmup_steps:
            return (step + 1) / settings.warmup_steps
        remaining = settings.steps - step
        return max(remaining / max(settings.steps - settings.warmup_steps, 1), 0.0)

    return factor


def train(
    model: torch.nn.Module,
    next_batch: Callable[[np.random.Generator, int, float], Batch],
    rng: np.random.Generator,
    settings: TrainSettings,
    label: str,
) -> dict[str, float]:
    """Train `model` in place on `settings.steps` batches from `next_batch(rng, batch_size,
    progress)` (a dict of model keyword arguments including `labels`; progress is the share of
    training done, in [0, 1), for curricula). Returns the final loss and time."""
    model.train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_then_linear_decay(settings))
    start = time.perf_counter()
    recent_losses: list[float] = []
    for step in range(1, settings.steps + 1):
        loss = model(**next_batch(rng, settings.batch_size, (step - 1) / settings.steps)).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
        optimizer.step()
        schedule.step()
        recent_losses.append(loss.item())
        if step % settings.log_every == 0 or step == settings.steps:
            mean_loss = sum(recent_losses) / len(recent_losses)
            elapsed = time.perf_counter() - start
            print(
                f"[{label}] step {step}/{settings.steps} loss {mean_loss:.4f} {elapsed:.0f}s",
                flush=True,
            )
            recent_losses.clear()
    model.eval()
    return {"final_loss": mean_loss, "train_seconds": round(time.perf_counter() - start, 1)}


def train_from_seed(
    seed: int,
    make_tokenizer: Callable[[], Tokenizer],
    build_model: Callable[[Tokenizer], Model],
    next_batch: Callable[[Tokenizer, np.random.Generator, int, float], Batch],
    settings: TrainSettings,
    label: str,
) -> tuple[Model, Tokenizer, dict[str, float]]:
    """Seed torch (the initial weights), build the tokenizer and the model, then `train` on
    `next_batch(tokenizer, rng, batch_size, progress)` batches from the seed's training stream."""
    torch.manual_seed(seed)
    tokenizer = make_tokenizer()
    model = build_model(tokenizer)
    rng = np.random.default_rng([seed, TRAIN_STREAM])
    stats = train(model, partial(next_batch, tokenizer), rng, settings, label)
    return model, tokenizer, stats


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


def exact_match(predictions: list[str], references: list[str]) -> float:
    """The fraction of predictions equal to their reference, character for character."""
    hits = sum(p == r for p, r in zip(predictions, references, strict=True))
    return hits / len(references)


def pad_right(sequences: list[list[int]], pad: int) -> torch.Tensor:
    """Stack token lists into a [B, longest] int64 tensor, right-padded with `pad`."""
    longest = max(len(s) for s in sequences)
    return torch.tensor([s + [pad] * (longest - len(s)) for s in sequences], dtype=torch.long)
