"""The demo tokenizers reproduce every spec text exactly and never need <unk>."""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import Tokenizer

from export.demo.tasks import make_match_report, render_shapes, report_vocabulary_texts
from export.demo.tokenizers import (
    EOS,
    UNK,
    build_word_tokenizer,
    caption_tokenizer,
    report_tokenizer,
)

CASES = 3000


def _report_texts() -> list[str]:
    rng = np.random.default_rng(11)
    return [text for _ in range(CASES) for text in make_match_report(rng)]


def _captions() -> list[str]:
    rng = np.random.default_rng(12)
    return [render_shapes(rng)[1] for _ in range(CASES)]


@pytest.mark.parametrize(
    ("tokenizer", "texts"),
    [(report_tokenizer, _report_texts), (caption_tokenizer, _captions)],
    ids=["reports-and-summaries", "captions"],
)
def test_decoding_reproduces_the_exact_text(tokenizer, texts) -> None:
    tok: Tokenizer = tokenizer()
    unk = tok.token_to_id(UNK)
    for text, encoding in zip(texts(), tok.encode_batch(texts()), strict=True):
        assert unk not in encoding.ids, text
        assert tok.decode(encoding.ids, skip_special_tokens=True) == text


def test_score_and_full_stop_are_separate_tokens() -> None:
    """ "3-1" is three tokens, so the model can copy each goal count on its own."""
    tokens = report_tokenizer().encode("Ashford beat Kelso 3-1 in York on Monday.").tokens
    assert tokens[3:6] == ["▁3", "-", "1"] and tokens[-2:] == [".", EOS]


def test_encoding_appends_end_of_sequence() -> None:
    tok = caption_tokenizer()
    assert tok.encode("a red circle").ids[-1] == tok.token_to_id(EOS)


def test_vocabulary_does_not_depend_on_text_order() -> None:
    forward = build_word_tokenizer(report_vocabulary_texts()).get_vocab()
    backward = build_word_tokenizer(reversed(list(report_vocabulary_texts()))).get_vocab()
    assert forward == backward


@pytest.mark.parametrize(
    "written", ["a yellow ", " a  yellow", "a\tyellow", "a\nyellow\u00a0", "a yellow\r\n"]
)
def test_extra_whitespace_reads_as_one_space(written: str) -> None:
    """A prompt or report typed with stray whitespace: no empty word, read as the unknown token
    (the server refused such a caption prompt as holding '')."""
    tok = caption_tokenizer()
    assert tok.encode(written).ids == tok.encode("a yellow").ids
    assert tok.token_to_id(UNK) not in tok.encode(written).ids
