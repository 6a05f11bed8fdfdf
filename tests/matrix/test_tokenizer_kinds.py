"""Every matrix checkpoint's tokenizer as the exporter writes it (tokenizer.json, converted
through AutoTokenizer from the hub file layout) against the checkpoint's own tokenizer, and the
server's incremental detokenizer on arbitrary token sequences of each kind. No model export:
cheap enough for all nine checkpoints in `make test`, plus a byte-fallback SentencePiece
tokenizer (Llama-style) that none of the nine uses.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from export.artifacts import TOKENIZER_FILE, write_tokenizer
from service.runtime.tokenizer import REPLACEMENT_CHAR, TextTokenizer
from tests.fixtures.checkpoint_matrix import MATRIX
from tests.fixtures.checkpoint_matrix.tokenizer_files import (
    CJK_AND_EMOJI,
    RARE_CHARACTERS,
    SENTENCES,
    write_byte_fallback_spm,
)

SEQUENCES = 200
TEXTS = [*SENTENCES[:9], "  spaces  around\tand\nnewlines  ", "🇩🇪🇫🇷👍🏽 東京 — «quotes» … ½"]


BYTE_FALLBACK = "spm-byte-fallback"  # not a matrix checkpoint: a Llama-style tokenizer.model
SPLITS_CHARACTERS = {name: "byte-level" in spec.tokenizer for name, spec in MATRIX.items()} | {
    BYTE_FALLBACK: True
}


@pytest.fixture(scope="module", params=list(SPLITS_CHARACTERS))
def tokenizers(request, matrix_checkpoints: Callable[[str], Path], tmp_path_factory):
    """(ours as served, the checkpoint's AutoTokenizer, its name)."""
    name = request.param
    if name == BYTE_FALLBACK:
        checkpoint = write_byte_fallback_spm(tmp_path_factory.mktemp(name))
    else:
        checkpoint = matrix_checkpoints(name)
    out = tmp_path_factory.mktemp(f"tokenizer-{name}")
    write_tokenizer(str(checkpoint), out, model_vocab_size=0)
    theirs = AutoTokenizer.from_pretrained(checkpoint)
    return TextTokenizer(out / TOKENIZER_FILE, 512), theirs, name


def test_served_tokenizer_encodes_and_decodes_as_the_checkpoints(tokenizers):
    ours, theirs, _ = tokenizers
    for text in TEXTS:
        ids = theirs(text).input_ids
        assert ours.encode(text).tolist() == ids, text
        assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=True), text


def test_each_tokens_text_is_the_checkpoints_decode_of_it(tokenizers):
    ours, theirs, _ = tokenizers
    for token in range(len(theirs)):
        assert ours.token_text(token) == theirs.decode([token]), token


def test_deltas_of_any_token_sequence_concatenate_to_its_text(tokenizers):
    """Random ids over the whole vocabulary (specials, byte pieces, `▁`, `##` pieces), pushed
    one or a few at a time: no delta holds a partial character, nothing is lost or repeated."""
    ours, theirs, _ = tokenizers
    rng = np.random.default_rng(0)
    for _ in range(SEQUENCES):
        ids = rng.integers(0, len(theirs), rng.integers(1, 40)).tolist()
        detokenizer = ours.detokenizer()
        deltas, start = [], 0
        while start < len(ids):
            step = int(rng.integers(1, 4))
            deltas.append(detokenizer.push(ids[start : start + step]))
            start += step
        tail, text = detokenizer.finish()
        assert "".join(deltas) + tail == text == theirs.decode(ids, skip_special_tokens=True)
        for index in range(len(deltas)):
            assert text.startswith("".join(deltas[: index + 1]))


def test_a_character_split_over_tokens_waits_for_its_last_piece(tokenizers):
    """Byte-level BPE spells a rare CJK character or emoji as pieces that end mid-character, a
    byte-fallback SentencePiece model as `<0x..>` pieces: streamed one token at a time, nothing
    of the character is sent until its last byte is in."""
    ours, theirs, name = tokenizers
    split = 0
    for char in sorted(set(CJK_AND_EMOJI + RARE_CHARACTERS + "".join(TEXTS))):
        ids = theirs(char, add_special_tokens=False).input_ids
        prefixes = (theirs.decode(ids[:end]) for end in range(1, len(ids)))
        if not any(prefix.endswith(REPLACEMENT_CHAR) for prefix in prefixes):
            continue
        split += 1
        detokenizer = ours.detokenizer()
        deltas = [detokenizer.push([token]) for token in ids]
        assert all(REPLACEMENT_CHAR not in delta for delta in deltas), char
        assert "".join(deltas) + detokenizer.finish()[0] == char.strip()
    assert bool(split) == SPLITS_CHARACTERS[name]
