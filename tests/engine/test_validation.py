"""resolve_params: defaults fill unset fields, caps and ranges give clear InvalidArgument."""

from __future__ import annotations

import pytest

from service.engine.config import EngineConfig
from service.engine.types import GenerationParams
from service.engine.validation import check_input_size, resolve_params
from service.errors import InvalidArgument
from service.runtime.manifest import GenerationDefaults

CONFIG = EngineConfig(max_num_beams=4, max_new_tokens_cap=64)


def test_unset_fields_take_the_models_defaults():
    defaults = GenerationDefaults(max_length=30, min_length=5, num_beams=3, no_repeat_ngram_size=2)
    resolved = resolve_params(GenerationParams(), defaults, CONFIG)
    assert resolved.max_length == 30 and resolved.max_new_tokens == 29
    assert resolved.min_length == 5
    assert resolved.num_beams == 3 and resolved.no_repeat_ngram_size == 2


def test_max_and_min_new_tokens_count_after_the_decoder_prompt():
    params = GenerationParams(max_new_tokens=10, min_new_tokens=4)
    resolved = resolve_params(params, GenerationDefaults(), CONFIG, prompt_len=3)
    assert (resolved.max_length, resolved.min_length) == (13, 7)


def test_model_default_above_the_server_cap_is_clamped():
    resolved = resolve_params(GenerationParams(), GenerationDefaults(max_length=1000), CONFIG)
    assert resolved.max_new_tokens == 64


def test_request_beyond_the_decoder_positions_is_refused_naming_the_limit():
    params = GenerationParams(max_new_tokens=40)
    with pytest.raises(InvalidArgument, match="holds 32 positions.*max_new_tokens must be <= 30"):
        resolve_params(params, GenerationDefaults(), CONFIG, prompt_len=2, max_decoder_positions=32)


def test_request_filling_the_decoder_positions_is_accepted():
    params = GenerationParams(max_new_tokens=30)
    resolved = resolve_params(
        params, GenerationDefaults(), CONFIG, prompt_len=2, max_decoder_positions=32
    )
    assert resolved.max_length == 32


def test_model_default_beyond_the_decoder_positions_is_clamped():
    defaults = GenerationDefaults(max_length=50)
    resolved = resolve_params(
        GenerationParams(), defaults, CONFIG, prompt_len=2, max_decoder_positions=32
    )
    assert resolved.max_length == 32


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (GenerationParams(num_beams=5), "num_beams must be between 1 and 4"),
        (GenerationParams(num_beams=0), "num_beams"),
        (GenerationParams(max_new_tokens=65), "max_new_tokens must be between 1 and 64"),
        (GenerationParams(max_new_tokens=0), "max_new_tokens"),
        (GenerationParams(min_new_tokens=9, max_new_tokens=8), "cannot exceed max_new_tokens"),
        (GenerationParams(min_new_tokens=-1), "min_new_tokens"),
        (GenerationParams(top_p=0.0), r"top_p must be in \(0, 1\]"),
        (GenerationParams(top_p=1.5), "top_p"),
        (GenerationParams(top_k=-1), "top_k"),
        (GenerationParams(do_sample=True, temperature=0.0), "temperature must be > 0"),
        (GenerationParams(temperature=-1.0), "temperature must be >= 0, got -1.0$"),
        (GenerationParams(temperature=float("nan")), "finite"),
        (GenerationParams(repetition_penalty=0.0), "repetition_penalty"),
        (GenerationParams(no_repeat_ngram_size=-2), "no_repeat_ngram_size"),
        (GenerationParams(length_penalty=float("inf")), "length_penalty"),
        (GenerationParams(seed=-1), "seed"),
        (GenerationParams(seed=2**64), "seed"),
        (GenerationParams(top_k=2**64 - 1), "top_k must be between 0 and 2147483647"),
        (GenerationParams(top_k=2**31), "top_k"),
        (GenerationParams(no_repeat_ngram_size=2**64 - 1), "no_repeat_ngram_size must be between"),
        (GenerationParams(min_new_tokens=2**63), "min_new_tokens"),
        (GenerationParams(explain_top_k=2**32), "explain_top_k needs explain"),
        (GenerationParams(truncate=-1), "truncate"),
        (GenerationParams(truncate=2**31), "truncate must be between 0 and 2147483647"),
        (GenerationParams(num_beams=2, do_sample=True), "beam sampling"),
    ],
)
def test_out_of_range_values_are_invalid_arguments(params, message):
    with pytest.raises(InvalidArgument, match=message):
        resolve_params(params, GenerationDefaults(), CONFIG)


def test_explicit_sampling_overrides_a_beam_default():
    defaults = GenerationDefaults(num_beams=4)
    resolved = resolve_params(GenerationParams(do_sample=True), defaults, CONFIG)
    assert (resolved.num_beams, resolved.do_sample) == (1, True)


def test_explicit_beams_override_a_sampling_default():
    defaults = GenerationDefaults(do_sample=True)
    resolved = resolve_params(GenerationParams(num_beams=2), defaults, CONFIG)
    assert (resolved.num_beams, resolved.do_sample) == (2, False)


def test_greedy_request_ignores_temperature_zero():
    resolved = resolve_params(GenerationParams(temperature=0.0), GenerationDefaults(), CONFIG)
    assert not resolved.do_sample


def test_unset_seed_is_random_and_set_seed_is_kept():
    a = resolve_params(GenerationParams(), GenerationDefaults(), CONFIG).seed
    b = resolve_params(GenerationParams(), GenerationDefaults(), CONFIG).seed
    assert a != b
    assert resolve_params(GenerationParams(seed=7), GenerationDefaults(), CONFIG).seed == 7


@pytest.mark.parametrize("value", [0, 1, 2**31 - 1])
def test_integer_settings_at_the_edges_of_int32_are_accepted(value: int):
    params = GenerationParams(top_k=value, no_repeat_ngram_size=value, truncate=value)
    resolved = resolve_params(params, GenerationDefaults(), CONFIG)
    assert (resolved.top_k, resolved.no_repeat_ngram_size, resolved.truncate) == (value,) * 3


def test_truncate_defaults_to_the_servers_setting():
    config = EngineConfig(max_new_tokens_cap=64, max_num_beams=4, truncate=100)
    assert resolve_params(GenerationParams(), GenerationDefaults(), config).truncate == 100
    explicit_off = GenerationParams(truncate=0)
    assert resolve_params(explicit_off, GenerationDefaults(), config).truncate == 0


def test_texts_over_the_byte_cap_are_refused_before_encoding():
    config = EngineConfig(max_input_bytes=10)
    check_input_size("0123456789", None, config)  # at the cap
    for text in ("01234567890", "é" * 6, "x" * 10_000_000):
        with pytest.raises(InvalidArgument, match="at most 10 bytes per text"):
            check_input_size(text, None, config)


def test_prompts_over_the_byte_cap_are_refused_before_encoding():
    config = EngineConfig(max_input_bytes=10)
    check_input_size(None, b"image", config, prompt="0123456789")  # at the cap
    for prompt in ("01234567890", "é" * 6):
        with pytest.raises(InvalidArgument, match="prompt is over 10 bytes"):
            check_input_size(None, b"image", config, prompt=prompt)
