"""model.json values the server could not run are refused at load, naming the field: wrong
types, integers past int32, token ids outside the vocabulary, generation defaults generate()
could not use, image sizes no encoder takes. Each of these used to load and then fail every
request (INTERNAL), answer nothing, break ListModels for every model, or, for a 100000-pixel
image side, get the whole server OOM-killed at its warm-up."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from service.runtime.manifest import (
    MANIFEST_FILE,
    GenerationDefaults,
    GraphSpec,
    ImagePreprocessing,
    ManifestError,
    ModelDims,
    ModelManifest,
    SpecialTokens,
)


def valid() -> dict[str, Any]:
    """A captioner's manifest the server accepts."""
    return asdict(
        ModelManifest(
            name="captioner",
            version="1",
            task="captioning",
            architecture="vision-encoder-decoder",
            model_type="vision-encoder-decoder",
            dtype="fp32",
            opset=18,
            encoder=GraphSpec("encoder.onnx", ["pixel_values"], ["last_hidden_state"]),
            decoder=GraphSpec("decoder.onnx", ["input_ids"], ["logits"]),
            dims=ModelDims(num_layers=2, num_heads=2, head_dim=8, hidden_size=16, vocab_size=64),
            special_tokens=SpecialTokens(pad=0, eos=[2], decoder_start=1),
            generation=GenerationDefaults(bad_words_ids=[[5]]),
            max_input_tokens=17,
            max_decoder_positions=32,
            image=ImagePreprocessing(height=32, width=32, mean=[0.5] * 3, std=[0.5] * 3),
        )
    )


def edited(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(valid())
    *parents, last = path.split(".")
    target = data
    for key in parents:
        target = target[key]
    target[last] = value
    return data


def test_the_valid_manifest_loads():
    assert ModelManifest.from_dict(valid()).generation.banned_tokens() == [5]


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("generation.num_beams", "4", "generation.num_beams must be an integer"),
        ("generation.num_beams", 2.5, "generation.num_beams must be an integer"),
        ("generation.num_beams", True, "generation.num_beams must be an integer"),
        ("generation.num_beams", 0, "generation.num_beams must be >= 1"),
        ("max_input_tokens", 10**12, "max_input_tokens must be an integer (int32)"),
        ("max_input_tokens", 1e12, "max_input_tokens must be an integer"),
        ("generation.max_length", -5, "generation.max_length must be >= 1"),
        ("generation.temperature", float("nan"), "temperature must be a finite number"),
        ("generation.top_p", 0, "generation.top_p must be in (0, 1]"),
        ("generation.temperature", -1, "generation.temperature must be >= 0"),
        ("generation.length_penalty", 50, "generation.length_penalty must be in -10..10"),
        ("generation.repetition_penalty", 2e4, "repetition_penalty must be in 0.0001..10000"),
        ("generation.early_stopping", "sometimes", "early_stopping must be true, false"),
        ("generation.forced_eos_token_id", -7, "forced_eos_token_id: token ids [-7] are outside"),
        ("generation.forced_bos_token_id", 64, "forced_bos_token_id: token ids [64] are outside"),
        ("generation.bad_words_ids", [5, 6], "bad_words_ids must be a list of lists of integers"),
        ("special_tokens.decoder_start", -1, "decoder_start: token ids [-1] are outside"),
        ("special_tokens.eos", [2, 99], "special_tokens.eos: token ids [99] are outside"),
        ("dims.vocab_size", 0, "dims.vocab_size must be >= 1"),
        ("image.height", 100000, "image.height must be in 1..4096"),
        ("image.std", [0, 0, 0], "image.std must be > 0"),
        ("image.mean", [0.5, 0.5], "image.mean must hold 1 or 3 values"),
        ("image.resample", "sinc", "image.resample must be one of"),
        ("name", "", "name must be a non-empty printable name"),
        ("name", "a/b", "name must be a non-empty printable name"),
        ("name", 7, "name must be a string"),
        ("version", "", "version must be a non-empty printable name"),
        ("version", 3, "version must be a string"),
    ],
)
def test_a_value_the_server_could_not_run_is_refused_naming_its_field(
    path: str, value: Any, message: str
):
    with pytest.raises(ManifestError) as raised:
        ModelManifest.from_dict(edited(path, value))
    assert message in str(raised.value)


def test_sampling_by_default_needs_a_positive_temperature():
    data = edited("generation.temperature", 0.0)
    ModelManifest.from_dict(data)  # unused while the default is not to sample
    data["generation"]["do_sample"] = True
    with pytest.raises(ManifestError, match="temperature must be > 0 .* when do_sample is on"):
        ModelManifest.from_dict(data)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"[]", "must hold a JSON object, not list"),
        (b"null", "must hold a JSON object, not NoneType"),
        (b'{"name": "\xff"}', "is not valid JSON"),
        (b'{"encoder": 5}', "malformed manifest"),
    ],
)
def test_a_model_json_that_is_no_manifest_object_is_a_manifest_error(
    tmp_path: Path, content: bytes, message: str
):
    (tmp_path / MANIFEST_FILE).write_bytes(content)
    with pytest.raises(ManifestError, match=message):
        ModelManifest.load(tmp_path)


def test_the_json_the_exporter_writes_reads_back(tmp_path: Path):
    manifest = ModelManifest.from_dict(valid())
    manifest.save(tmp_path)
    assert json.loads((tmp_path / MANIFEST_FILE).read_text()) == valid()
