"""The non-graph files of a model directory, taken from the checkpoint as transformers wrote them:
tokenizer.json, generation_config.json and (captioning) preprocessor_config.json."""

from __future__ import annotations

import shutil
from dataclasses import fields
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from export.errors import ExportError
from export.marian_tokenizer import is_marian, marian_fast_tokenizer
from service.runtime.manifest import GenerationDefaults

TOKENIZER_FILE = "tokenizer.json"
GENERATION_CONFIG_FILE = "generation_config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
# generate()'s new-token count when no max_length / max_new_tokens is set anywhere.
TRANSFORMERS_UNSET_MAX_NEW_TOKENS = 20


def write_tokenizer(model_path: str, out_dir: Path, model_vocab_size: int) -> None:
    """Copy the checkpoint's tokenizer.json; otherwise save the backend of its fast tokenizer
    (e.g. one built from sentencepiece files)."""
    local = Path(model_path) / TOKENIZER_FILE
    if local.is_file():
        shutil.copyfile(local, out_dir / TOKENIZER_FILE)
    else:
        _save_fast_tokenizer(model_path, out_dir)
    try:
        size = Tokenizer.from_file(str(out_dir / TOKENIZER_FILE)).get_vocab_size()
    except Exception as exc:  # the tokenizers library raises a bare Exception for a bad file
        raise ExportError(f"{model_path}: its tokenizer.json cannot be read: {exc}") from exc
    if size < model_vocab_size // 2:
        # transformers builds an empty tokenizer when a checkpoint ships none
        raise ExportError(
            f"{model_path}: its tokenizer has {size} tokens for a model vocabulary of "
            f"{model_vocab_size}; is tokenizer.json missing?"
        )


def _save_fast_tokenizer(model_path: str, out_dir: Path) -> None:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path)
    except Exception as exc:  # transformers raises many types for a missing/odd tokenizer
        raise ExportError(
            f"{model_path}: no tokenizer.json and no loadable tokenizer ({exc})"
        ) from exc
    if is_marian(tokenizer):  # transformers has no fast Marian tokenizer: build its equivalent
        marian_fast_tokenizer(tokenizer).save(str(out_dir / TOKENIZER_FILE))
        return
    if not getattr(tokenizer, "is_fast", False):
        raise ExportError(f"{model_path}: its tokenizer has no `tokenizers` (fast) version")
    tokenizer.backend_tokenizer.save(str(out_dir / TOKENIZER_FILE))


def write_generation_config(generation_config: Any, out_dir: Path) -> None:
    """The GenerationConfig generate() applies (the family says which), as transformers writes
    it: only what differs from transformers' defaults."""
    generation_config.to_json_file(out_dir / GENERATION_CONFIG_FILE, use_diff=True)


def write_preprocessor_config(model_path: str, out_dir: Path) -> None:
    local = Path(model_path) / PREPROCESSOR_FILE
    if local.is_file():
        shutil.copyfile(local, out_dir / PREPROCESSOR_FILE)
        return
    from transformers import AutoImageProcessor

    AutoImageProcessor.from_pretrained(model_path).save_pretrained(out_dir)


def generation_defaults(generation_config: Any) -> GenerationDefaults:
    """The manifest's generation defaults: each field the checkpoint sets, else ours.

    A checkpoint that sets neither max_length nor max_new_tokens gets what generate() does then
    (transformers 5.24, `_prepare_generated_length`): 20 tokens after the decoder's starting
    tokens, not a total length of 20.
    """
    values = {}
    for field in fields(GenerationDefaults):
        value = getattr(generation_config, field.name, None)
        if value is not None:
            values[field.name] = value
    if "max_length" not in values and "max_new_tokens" not in values:
        values["max_new_tokens"] = TRANSFORMERS_UNSET_MAX_NEW_TOKENS
    bad_words = values.get("bad_words_ids")
    if bad_words is not None:
        if any(len(ids) != 1 for ids in bad_words):  # Marian's [[pad]] is the case served
            raise ExportError(
                f"generation_config.bad_words_ids {bad_words}: only single-token entries are "
                "supported (the server bans those tokens at every step)"
            )
        values["bad_words_ids"] = [[int(ids[0])] for ids in bad_words]
    return GenerationDefaults(**values)
