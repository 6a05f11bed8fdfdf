"""Conditional captioning: a prompt the caption continues, against transformers' generate().

The references are transformers' own paths: for BLIP, the prompt tokenized with special tokens
(the checkpoint's tokenizer adds a BERT-style `[CLS] ... [SEP]` here) and handed to
`BlipForConditionalGeneration.generate(input_ids=...)`, which swaps [CLS] for the decoder's bos
and drops [SEP]; for ViT-GPT2, `generate(decoder_input_ids=[decoder_start, *prompt tokens])`.
Tokens, text (`decode(generate(...), skip_special_tokens=True)`, prompt included), streamed
deltas and token counts are checked, and rows with and without prompts batched as each alone.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    BlipForConditionalGeneration,
    PreTrainedTokenizerFast,
    VisionEncoderDecoderModel,
)

from export.exporter import export_model
from service.engine.config import EngineConfig
from service.engine.sequence import SequenceGroup, StepEvent
from service.engine.served_model import ServedModel
from service.engine.sync_driver import run_to_completion
from service.engine.types import GenerationParams, GenerationResult, TokenDelta
from service.errors import InvalidArgument
from service.runtime.model import LoadedModel
from tests.fixtures.tiny_image_models import EOS, SEP, build_blip

# Prompts of the tiny vocabulary (w0..w58); a repeated word lets no-repeat-ngram and the
# repetition penalty act on prompt tokens, as transformers' processors do.
PROMPTS = ["w3 w17 w3", "w40", None, "w8 w9 w10 w11 w12"]
GREEDY = GenerationParams(max_new_tokens=8, num_beams=1, do_sample=False, repetition_penalty=1.4)
BEAM = GenerationParams(
    max_new_tokens=8, num_beams=3, length_penalty=1.3, no_repeat_ngram_size=2, min_new_tokens=3
)
# The model's own length default: generate()'s max_length counts the prompt, as ours does.
DEFAULT_LENGTH = GenerationParams(num_beams=1, do_sample=False)


def _blip_checkpoint(tmp: Path) -> Path:
    """The tiny BLIP with a tokenizer that adds `</s> ... [SEP]` around a text, as BERT's adds
    `[CLS] ... [SEP]`: the prompt's tokens must come without them. Its opening token is not the
    decoder's bos (as BERT's [CLS] is not BLIP's [DEC]), so generate()'s swap shows."""
    checkpoint = build_blip(tmp / "checkpoint")
    path = checkpoint / "tokenizer.json"
    tokenizer = json.loads(path.read_text())
    tokenizer["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [
            {"SpecialToken": {"id": "</s>", "type_id": 0}},
            {"Sequence": {"id": "A", "type_id": 0}},
            {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
        ],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {
            "</s>": {"id": "</s>", "ids": [EOS], "tokens": ["</s>"]},
            "[SEP]": {"id": "[SEP]", "ids": [SEP], "tokens": ["[SEP]"]},
        },
    }
    path.write_text(json.dumps(tokenizer))
    return checkpoint


@pytest.fixture(scope="module", params=["blip", "vit-gpt2"])
def family(request, tmp_path_factory) -> tuple[str, Path, Path]:
    """(family name, checkpoint, exported model directory); ViT-GPT2 is the session's
    `captioner` (tests/e2e/conftest.py)."""
    if request.param == "vit-gpt2":
        return request.param, *request.getfixturevalue("captioner")
    tmp = tmp_path_factory.mktemp(request.param)
    checkpoint = _blip_checkpoint(tmp)
    export_model(checkpoint, "captioning", tmp / "model", progress=lambda *_: None)
    return request.param, checkpoint, tmp / "model"


@pytest.fixture(scope="module")
def served(family) -> ServedModel:
    return ServedModel(LoadedModel.load(family[2]), EngineConfig())


@pytest.fixture(scope="module")
def reference(family):
    name, checkpoint, _ = family
    model_class = BlipForConditionalGeneration if name == "blip" else VisionEncoderDecoderModel
    model = model_class.from_pretrained(checkpoint).eval()
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(checkpoint / "tokenizer.json"))
    return name, model, tokenizer


@pytest.fixture(scope="module")
def images() -> list[bytes]:
    rng = np.random.default_rng(3)
    encoded = []
    for height in (30, 37, 44, 52):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (height, 40, 3), dtype=np.uint8)).save(buffer, "PNG")
        encoded.append(buffer.getvalue())
    return encoded


def _generate(reference, pixels: np.ndarray, prompt: str | None, params: GenerationParams):
    """transformers' sequence for one image: (new tokens up to EOS, the decoded text)."""
    name, model, tokenizer = reference
    settings = {
        "num_beams": params.num_beams or 1,
        "do_sample": False,
        "max_new_tokens": params.max_new_tokens,
        "min_new_tokens": params.min_new_tokens or 0,
        "length_penalty": 1.0 if params.length_penalty is None else params.length_penalty,
        "no_repeat_ngram_size": params.no_repeat_ngram_size or 0,
        "repetition_penalty": params.repetition_penalty or 1.0,
    }
    pixel_values = torch.from_numpy(pixels)
    if name == "blip":  # the processor's tokens; generate() replaces [CLS] and drops [SEP]
        inputs = {"input_ids": tokenizer([prompt]).input_ids} if prompt else {}
        eos = model.config.text_config.sep_token_id
    else:
        start = model.generation_config.decoder_start_token_id
        ids = [start, *tokenizer(prompt, add_special_tokens=False).input_ids] if prompt else [start]
        inputs = {"decoder_input_ids": torch.tensor([ids])}
        eos = model.generation_config.eos_token_id
    with torch.no_grad():
        sequence = model.generate(pixel_values, **inputs, **settings)[0].tolist()
    prompt_len = 1 + (len(tokenizer(prompt, add_special_tokens=False).input_ids) if prompt else 0)
    new = sequence[prompt_len:]
    if eos in new:
        new = new[: new.index(eos) + 1]
    text = tokenizer.decode(sequence[: prompt_len + len(new)], skip_special_tokens=True)
    return new, text


def _pixels(served: ServedModel, image: bytes) -> np.ndarray:
    group = served.prepare(None, image, GenerationParams(), lambda _: None)
    return group.encoder_feeds["pixel_values"]


@pytest.mark.parametrize(
    "params", [GREEDY, BEAM, DEFAULT_LENGTH], ids=["greedy", "beam", "default-length"]
)
def test_prompted_captions_equal_generate_with_the_same_prefix(served, reference, images, params):
    results = run_to_completion(served, images, [params] * len(images), prompts=PROMPTS)
    for image, prompt, result in zip(images, PROMPTS, results, strict=True):
        tokens, text = _generate(reference, _pixels(served, image), prompt, params)
        assert (result.token_ids, result.text) == (tokens, text), prompt
        assert result.output_tokens == len(tokens)
        assert result.text.startswith(prompt or "")


def test_input_tokens_count_the_prompt_and_max_new_tokens_does_not(served, images):
    plain, prompted = run_to_completion(
        served, images[:2], [GREEDY, GREEDY], prompts=[None, PROMPTS[3]]
    )
    assert prompted.input_tokens == plain.input_tokens + len(PROMPTS[3].split())
    assert prompted.output_tokens <= GREEDY.max_new_tokens
    long = GenerationParams(max_new_tokens=6, min_new_tokens=6)
    (forced_long,) = run_to_completion(served, images[:1], [long], prompts=[PROMPTS[3]])
    assert (forced_long.output_tokens, forced_long.finish_reason) == (6, "length")


def _drive(served: ServedModel, arrivals: list[tuple[bytes, str | None, GenerationParams]]):
    """Submit one request every other step into a running batch; each request's events."""
    events: list[list[StepEvent]] = []
    groups: list[SequenceGroup] = []
    step = 0
    while len(groups) < len(arrivals) or served.scheduler.has_work():
        if step % 2 == 0 and len(groups) < len(arrivals):
            image, prompt, params = arrivals[len(groups)]
            events.append([])
            group = served.prepare(None, image, params, events[-1].append, prompt=prompt)
            served.scheduler.add(group)
            groups.append(group)
        for group, event in served.step():
            group.emit(event)
        step += 1
    return groups, events


def test_rows_with_and_without_prompts_get_the_same_tokens_batched_as_alone(served, images):
    sampled = GenerationParams(max_new_tokens=7, do_sample=True, top_k=10, seed=5)
    arrivals = [
        (images[0], PROMPTS[0], GREEDY),
        (images[1], None, BEAM),
        (images[2], PROMPTS[3], BEAM),
        (images[3], PROMPTS[1], sampled),
        (images[1], None, GREEDY),
        (images[0], PROMPTS[1], GREEDY),
    ]
    alone = [_drive(served, [arrival])[0][0].generated for arrival in arrivals]
    groups, _ = _drive(served, arrivals)
    assert [group.generated for group in groups] == alone


def test_streamed_deltas_join_to_the_unary_text_prompt_first(served, images):
    groups, events = _drive(served, [(images[2], PROMPTS[0], GREEDY)])
    output = served.output(groups[0])
    outputs = [item for event in events[0] for item in output.feed(event)]
    deltas = [item for item in outputs if isinstance(item, TokenDelta)]
    result = outputs[-1]
    assert isinstance(result, GenerationResult)
    assert "".join(delta.text for delta in deltas) == result.text
    assert deltas[0].text.startswith(PROMPTS[0])
    assert [t for delta in deltas for t in delta.token_ids] == result.token_ids


def test_an_empty_prompt_is_no_prompt(served, images):
    plain, empty = run_to_completion(served, images[:1] * 2, [GREEDY, GREEDY], prompts=[None, ""])
    assert (empty.token_ids, empty.text, empty.input_tokens) == (
        plain.token_ids,
        plain.text,
        plain.input_tokens,
    )


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        (" ".join(["w1"] * 63), "prompt is 63 tokens long; this model accepts at most 62"),
        ("\x00\x01 \t", "prompt has no printable character"),
        ("w1 \ud800", "not valid UTF-8"),
    ],
    ids=["past-the-positions", "unprintable", "lone-surrogate"],
)
def test_bad_prompts_are_invalid_arguments(served, images, prompt, message):
    with pytest.raises(InvalidArgument, match=message):
        served.prepare(None, images[0], GREEDY, lambda _: None, prompt=prompt)


def test_a_prompt_with_max_new_tokens_past_the_positions_is_refused(served, images):
    too_many = GenerationParams(max_new_tokens=60)
    with pytest.raises(InvalidArgument, match="6 of them taken by the decoder start and prompt"):
        served.prepare(None, images[0], too_many, lambda _: None, prompt=PROMPTS[3])


def test_prompted_greedy_captions_are_unchanged_with_the_argmax_on_the_device(
    family, served, images
):
    """--device-argmax on: rows inside their prompt still take their prompt tokens, and the
    free rows' device argmax gives the same captions as the host's."""
    on_device = ServedModel(LoadedModel.load(family[2]), EngineConfig(device_argmax="on"))
    params = [GREEDY] * len(images)
    expected = run_to_completion(served, images, params, prompts=PROMPTS)
    results = run_to_completion(on_device, images, params, prompts=PROMPTS)
    assert [(r.token_ids, r.text) for r in results] == [(r.token_ids, r.text) for r in expected]
