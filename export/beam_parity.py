"""Beam search (num_beams=4) of the exported model, run by the serving engine itself, against
`model.generate()` on the same tokenized texts.

The engine is what serves the model, so this checks the graphs and the engine's beam search
together, exactly as requests will run. Text models only: captioning checks stop at greedy.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from export.artifacts import TOKENIZER_FILE
from export.parity import until_eos
from service.engine.offline import generate_offline
from service.engine.types import GenerationParams
from service.runtime.manifest import SpecialTokens

NUM_BEAMS = 4
BEAM_NEW_TOKENS = 10
_TEXT_TOKENS = (11, 5, 8)


def check_beam(model: Any, model_dir: Path, special: SpecialTokens) -> dict[str, Any]:
    """Per text: the engine's beam tokens equal generate()'s. Penalties that requests can set are
    neutral on both sides; the checkpoint's forced tokens and early stopping apply to both."""
    tokenizer = Tokenizer.from_file(str(model_dir / TOKENIZER_FILE))
    texts = _sample_texts(tokenizer, special)
    params = GenerationParams(
        max_new_tokens=BEAM_NEW_TOKENS,
        min_new_tokens=0,
        num_beams=NUM_BEAMS,
        do_sample=False,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        length_penalty=1.0,
    )
    served = generate_offline(model_dir, texts, params)
    config = copy.deepcopy(model.generation_config)
    config.update(
        max_new_tokens=BEAM_NEW_TOKENS,
        min_length=0,
        min_new_tokens=0,
        num_beams=NUM_BEAMS,
        do_sample=False,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        length_penalty=1.0,
    )
    mismatched = []
    for row, (text, result) in enumerate(zip(texts, served, strict=True)):
        input_ids = torch.tensor([tokenizer.encode(text).ids])
        with torch.no_grad():
            sequence = model.generate(input_ids=input_ids, generation_config=config)[0, 1:]
        if result.token_ids != until_eos(sequence.tolist(), special.eos):
            mismatched.append(row)
    return {
        "beam_num_beams": NUM_BEAMS,
        "beam_new_tokens": BEAM_NEW_TOKENS,
        "beam_tokens_identical": not mismatched,
        "beam_mismatched_rows": mismatched,
    }


def _sample_texts(tokenizer: Tokenizer, special: SpecialTokens) -> list[str]:
    """Texts decoded from random ordinary token ids (fixed seed)."""
    rng = np.random.default_rng(2)
    specials = {special.pad, special.decoder_start, *special.eos}
    ordinary = [i for i in range(tokenizer.get_vocab_size()) if i not in specials]
    return [tokenizer.decode(rng.choice(ordinary, n).tolist()) for n in _TEXT_TOKENS]
