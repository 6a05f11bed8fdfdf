"""BeamSearchGroup + process_logits driven by a tiny PyTorch BART, against `generate()`.

The model is run without a cache on the full decoder sequences of the beam rows, so this checks
the search itself (scores, finished hypotheses, stopping) independently of the ONNX export.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import BartConfig, BartForConditionalGeneration

from service.engine.beam_search import BeamSearchGroup
from service.engine.decoding import RowParams, process_logits
from service.engine.validation import ResolvedParams
from tests.engine.params import resolved_params

EOS, START, PAD, BOS = 2, 2, 1, 0


@pytest.fixture(scope="module")
def model() -> BartForConditionalGeneration:
    torch.manual_seed(0)
    config = BartConfig(
        vocab_size=48,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=64,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
        decoder_start_token_id=START,
        forced_eos_token_id=None,
        init_std=0.2,  # wide enough that the output depends on the input
    )
    bart = BartForConditionalGeneration(config).eval()
    with torch.no_grad():
        bart.lm_head.weight.mul_(3.0)  # spread the logits: no near ties between beams
        bart.final_logits_bias[0, EOS] = 6.0  # hypotheses end at varied lengths
    return bart


def _beam_search_with_group(model, input_ids: torch.Tensor, params: ResolvedParams) -> list[int]:
    nb = params.num_beams
    eos = np.array([EOS])
    with torch.no_grad():
        encoder_out = model.get_encoder()(input_ids=input_ids.repeat(nb, 1))
    group = BeamSearchGroup(
        nb, params.prompt_len, params.max_length, params.length_penalty, params.early_stopping, eos
    )
    rows = RowParams.for_request(params, nb)
    sequences = np.full((nb, 1), START, dtype=np.int64)
    while True:
        cur_len = sequences.shape[1]
        with torch.no_grad():
            logits = model(
                encoder_outputs=encoder_out, decoder_input_ids=torch.from_numpy(sequences)
            ).logits[:, -1]
        lengths = np.full(nb, cur_len, dtype=np.int64)
        scores = process_logits(logits.numpy(), sequences, lengths, rows, eos)
        step = group.step(scores, sequences, cur_len)
        if step.done:
            return group.best().tolist()
        sequences = np.concatenate([sequences[step.source_beams], step.next_tokens[:, None]], 1)


def _hf_generate(model, input_ids: torch.Tensor, params: ResolvedParams) -> list[int]:
    with torch.no_grad():
        out = model.generate(
            input_ids,
            num_beams=params.num_beams,
            do_sample=False,
            max_new_tokens=params.max_new_tokens,
            min_length=params.min_length,
            length_penalty=params.length_penalty,
            early_stopping=params.early_stopping,
            no_repeat_ngram_size=params.no_repeat_ngram_size,
            repetition_penalty=params.repetition_penalty,
            forced_bos_token_id=params.forced_bos_token_id,
            forced_eos_token_id=params.forced_eos_token_id,
        )
    tokens = out[0].tolist()
    while len(tokens) > 1 and tokens[-1] == PAD:
        tokens.pop()
    return tokens


BEAM_SEARCH = {"num_beams": 4, "max_length": 21}
CASES = {  # settings on top of BEAM_SEARCH
    "plain": dict(),
    "length_penalty": dict(length_penalty=2.0, max_length=16),
    "negative_length_penalty": dict(length_penalty=-0.5),
    "no_repeat_and_min_length": dict(no_repeat_ngram_size=2, min_length=12),
    "early_stopping": dict(early_stopping=True, num_beams=3),
    "early_stopping_never": dict(early_stopping="never", num_beams=5, length_penalty=1.5),
    "forced_bos_eos_repetition": dict(
        forced_bos_token_id=BOS, forced_eos_token_id=EOS, repetition_penalty=1.4, max_length=12
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_beam_search_returns_the_hypothesis_generate_returns(model, case):
    params = resolved_params(**{**BEAM_SEARCH, **CASES[case]})
    generator = torch.Generator().manual_seed(sorted(CASES).index(case))
    for length in (3, 5, 8, 11, 14):
        input_ids = torch.randint(3, 48, (1, length), generator=generator)
        assert _beam_search_with_group(model, input_ids, params) == _hf_generate(
            model, input_ids, params
        )
