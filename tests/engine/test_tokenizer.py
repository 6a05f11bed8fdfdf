"""TextTokenizer input checks and IncrementalDetokenizer streaming on real `tokenizers` models."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from service.errors import InvalidArgument
from service.runtime.tokenizer import REPLACEMENT_CHAR, TextTokenizer

CORPUS = [
    "naïve café — déjà vu at the crème brûlée stand 🍮🍮",
    "日本語のテキストも少し 🎉 and some English words",
    "the quick brown fox jumps over the lazy dog",
] * 20


def _train(path: Path, byte_level: bool) -> Path:
    if byte_level:  # GPT-2 / BART style: multi-byte characters span several tokens
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:  # SentencePiece / T5 style: a word's leading space is a "▁" on its first piece
        tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        alphabet = []
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<pad>", "</s>", "<unk>"], initial_alphabet=alphabet
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    tokenizer.save(str(path))
    return path


@pytest.fixture(scope="module", params=["byte_level", "metaspace"])
def tokenizer(request, tmp_path_factory) -> TextTokenizer:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    return TextTokenizer(_train(path, request.param == "byte_level"), max_input_tokens=40)


@pytest.mark.parametrize("text", CORPUS[:3])
def test_streamed_deltas_concatenate_to_the_full_text(tokenizer, text):
    ids = tokenizer._tokenizer.encode(text).ids
    detokenizer = tokenizer.detokenizer()
    deltas = [detokenizer.push([token]) for token in ids]
    tail, full = detokenizer.finish()
    assert "".join(deltas) + tail == full == tokenizer.decode(ids)
    assert not any(REPLACEMENT_CHAR in d for d in deltas), "no half characters are streamed"


def test_empty_text_is_invalid(tokenizer):
    with pytest.raises(InvalidArgument, match="text is empty"):
        tokenizer.encode("   ")


def test_text_over_the_limit_is_invalid_and_states_the_limit(tokenizer):
    with pytest.raises(InvalidArgument, match="at most 40 input tokens"):
        tokenizer.encode(" ".join(["the quick brown fox"] * 30))


def test_text_within_the_limit_is_encoded_untruncated(tokenizer):
    ids = tokenizer.encode("the lazy dog")
    assert tokenizer.decode(ids.tolist()).strip() == "the lazy dog"
