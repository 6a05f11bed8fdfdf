"""TextTokenizer input checks and IncrementalDetokenizer streaming on real `tokenizers` models."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

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


@pytest.mark.parametrize("text", ["\x00" * 50, "\x00 \x01\t\u200b", "\u200b\u200e\x7f"])
def test_text_without_a_printable_character_is_invalid(tokenizer, text):
    with pytest.raises(InvalidArgument, match="no printable character"):
        tokenizer.encode(text)


def test_truncation_keeps_the_first_tokens_and_the_closing_special_tokens(tokenizer):
    text = " ".join(["the quick brown fox"] * 30)
    whole = tokenizer._tokenizer.encode(text)
    closing = 1 if whole.special_tokens_mask[-1] else 0
    encoded = tokenizer.encode_with_offsets(text, truncate=1000)  # cut to the model's maximum
    assert encoded.truncated and encoded.ids.size == 40
    expected = [*whole.ids[: 40 - closing], *whole.ids[len(whole.ids) - closing :]]
    assert encoded.ids.tolist() == expected
    assert encoded.offsets == [whole.offsets[i] for i in range(40 - closing)] + (
        [whole.offsets[-1]] if closing else []
    )
    shorter = tokenizer.encode_with_offsets(text, truncate=7)
    assert (
        shorter.truncated
        and shorter.ids.tolist() == expected[: 7 - closing] + expected[40 - closing :]
    )


def test_a_text_within_the_limits_is_not_marked_truncated(tokenizer):
    encoded = tokenizer.encode_with_offsets("the lazy dog", truncate=30)
    assert not encoded.truncated


def test_a_text_far_over_the_limit_is_judged_on_a_prefix_with_the_same_first_tokens(tokenizer):
    text = " ".join(["the quick brown fox"] * 5_000)  # ~100 KB, thousands of tokens
    whole = tokenizer._tokenizer.encode(text)
    closing = 1 if whole.special_tokens_mask[-1] else 0
    with pytest.raises(InvalidArgument, match="at least .* tokens long; .* at most 40"):
        tokenizer.encode(text)
    encoded = tokenizer.encode_with_offsets(text, truncate=40)
    assert encoded.ids.tolist()[: 40 - closing] == whole.ids[: 40 - closing]
    assert encoded.ids.tolist()[40 - closing :] == whole.ids[len(whole.ids) - closing :]


def test_a_prompt_whose_whitespace_is_an_unknown_token_names_it_as_it_is(tmp_path: Path):
    """A word-level tokenizer that keeps whitespace runs as tokens reads an unknown run as its
    unknown token: the refusal quoted it stripped, as ''."""
    word_level = Tokenizer(models.WordLevel({"<unk>": 0, "a": 1, "yellow": 2, " ": 3}, "<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.Split(Regex(" +"), behavior="isolated")
    path = tmp_path / "tokenizer.json"
    word_level.save(str(path))
    tokenizer = TextTokenizer(path, max_input_tokens=40)
    assert tokenizer.encode_prompt("a yellow") == [1, 3, 2]
    with pytest.raises(InvalidArgument, match=r"prompt holds '  ', which this model's"):
        tokenizer.encode_prompt("a  yellow")
